#!/usr/bin/env python3
"""Train the temporal fusion (model.fusion) on synthetic all-intra video (train.motion) made from the corpus's
training images, with the shipped model's per-frame outputs; writes OUT.safetensors and OUT.json.

Each video (its reference, decoded frames and per-frame outputs) is kept in WORK as it is made, so an
interrupted run resumes where it stopped; the last tenth of the videos (at least one) is held out and scored at the end.

  python scripts/train_fusion.py --corpus data/corpus --work runs/fusion/v2 --videos 480 --busy-videos 160 \\
      --minutes 20 --out model/weights/fusion
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import run
from PIL import Image
from safetensors.torch import save_file

from diffqe.model import checkpoint
from diffqe.model.files import atomic_savez, atomic_write
from diffqe.model.fusion import RADIUS, FusionNet, fuse
from diffqe.model.inference import enhance_planes
from diffqe.train.motion import coded_video

FRAMES = 9  # each video gives FRAMES - 2 RADIUS centres with a full window
HARM = 2  # a frame the fusion makes worse counts its loss 1 + HARM times: blurring motion is worse than not averaging


def make_videos(corpus: Path, work: Path, count: int, seed: int, busy: bool) -> list[Path]:
    """Code and enhance videos 0..COUNT-1 (of the BUSY series) that WORK does not hold yet; -> their files."""
    paths = [work / f"{'b' if busy else ''}{i:05d}.npz" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        images = [np.asarray(Image.open(p)) for p in sorted((corpus / "train").glob("*.png"))]
        if not images:
            raise FileNotFoundError(f"no images under {corpus}/train; build the corpus with scripts/make_corpus.py")
        model = checkpoint.load()[0].eval()
        work.mkdir(parents=True, exist_ok=True)
        for done, i in enumerate(missing, 1):
            ref, dec, qp = coded_video(images, i, frames=FRAMES, seed=seed, busy=busy)
            out = enhance_planes(model, dec)
            atomic_savez(paths[i], ref=ref, dec=dec, out=out, qp=qp)
            if done % 25 == 0 or done == len(missing):
                print(f"videos made: {done}/{len(missing)}", file=sys.stderr, flush=True)
    return paths


def load(paths: list[Path]) -> dict[str, torch.Tensor]:
    arrays: dict[str, list[np.ndarray]] = {"ref": [], "dec": [], "out": []}
    for p in paths:
        with np.load(p) as z:
            for k in arrays:
                arrays[k].append(z[k])
    return {k: torch.from_numpy(np.stack(v)) for k, v in arrays.items()}  # uint8 [N, FRAMES, H, W]


def window(data: dict[str, torch.Tensor], video: int, centre: int) -> tuple[torch.Tensor, ...]:
    """(decoded, outputs) [2R+1,1,H,W] and the reference [1,1,H,W] around CENTRE, floats in [0,1]."""
    span = slice(centre - RADIUS, centre + RADIUS + 1)
    dec, out = (data[k][video, span, None].float() / 255 for k in ("dec", "out"))
    return dec, out, data["ref"][video, centre, None, None].float() / 255


def log_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.log10((a - b).square().mean() + 1e-10)  # -PSNR / 10 up to a constant: what dPSNR averages


def score(net: FusionNet, data: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean dPSNR (dB) of the per-frame outputs and of the fused ones (the network's own weights, unguarded, as
    it trains) over every centre of DATA."""
    per_frame, fused = [], []
    with torch.no_grad():
        for v in range(len(data["ref"])):
            for c in range(RADIUS, FRAMES - RADIUS):
                dec, out, ref = window(data, v, c)
                base = log_mse(dec[RADIUS:RADIUS + 1], ref)
                per_frame.append(10 * float(base - log_mse(out[RADIUS:RADIUS + 1], ref)))
                y = (fuse(net, dec, out, RADIUS, still=None) * 255).round() / 255
                fused.append(10 * float(base - log_mse(y, ref)))
    return float(np.mean(per_frame)), float(np.mean(fused))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="weights stem: writes OUT.safetensors and OUT.json")
    ap.add_argument("--videos", type=int, default=480)
    ap.add_argument("--busy-videos", type=int, default=160, help="videos in which little or nothing stands still")
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if min(args.videos, args.busy_videos) < 2:
        raise ValueError(f"--videos and --busy-videos must be at least 2 (a tenth, at least one, is held out), got "
                         f"{args.videos} and {args.busy_videos}")
    series = [make_videos(args.corpus, args.work, n, args.seed, busy) for n, busy in
              ((args.videos, False), (args.busy_videos, True))]
    train = load([p for paths in series for p in paths[:-max(len(paths) // 10, 1)]])
    val = load([p for paths in series for p in paths[-max(len(paths) // 10, 1):]])
    held = len(val["ref"])
    torch.manual_seed(args.seed)
    net = FusionNet()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    start, step, recent = time.monotonic(), 0, []
    while time.monotonic() - start < args.minutes * 60:
        loss = torch.zeros(())
        for _ in range(args.batch):
            dec, out, ref = window(train, int(rng.integers(len(train["ref"]))), int(rng.integers(RADIUS, FRAMES - RADIUS)))
            # The network learns its own weights; the guard (model.fusion.STILL) is for inference only.
            worse = log_mse(fuse(net, dec, out, RADIUS, still=None), ref) - log_mse(out[RADIUS:RADIUS + 1], ref)
            loss = loss + worse + HARM * torch.relu(worse)
        opt.zero_grad()
        (loss / args.batch).backward()
        opt.step()
        step, recent = step + 1, (recent + [-10 * loss.item() / args.batch])[-200:]
        if step % 200 == 0:
            print(f"step {step}: objective {np.mean(recent):+.3f} dB (fused over per frame, losses counted "
                  f"{1 + HARM} times; last 200 steps)", file=sys.stderr, flush=True)
    per_frame, fused = score(net.eval(), val)
    print(f"held-out videos ({held}): per frame {per_frame:+.3f} dB, fused {fused:+.3f} dB after {step} steps",
          file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(args.out.with_suffix(".safetensors"), lambda tmp: save_file(tensors, str(tmp)))
    meta = {"width": net.width, "steps": step, "videos": args.videos, "busy_videos": args.busy_videos,
            "harm": HARM, "seed": args.seed,
            "held_out_dpsnr": {"per_frame": round(per_frame, 4), "fused": round(fused, 4)}}
    atomic_write(args.out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return 0


if __name__ == "__main__":
    run(main)
