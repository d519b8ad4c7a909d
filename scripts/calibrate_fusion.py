#!/usr/bin/env python3
"""Where to set the fusion's guards, on synthetic all-intra video (train.motion, from the corpus's training images).

The motion test (model.fusion.MOVED): the share of the decoded frames' difference that the test's fit explains, on
blocks whose reference stands truly still (bit-identical over the 3x3 blocks) and on blocks whose reference moved,
among those that pass the STILL check.  MOVED is the value that lets 95 % of the still ones through.

The fine joins (--fine; model.fusion.FINE_SHARE): the shipped model on every frame, then each video fused without
fine joins and with each candidate share; FINE_SHARE is the largest with which no video loses 0.01 dB against none.
Seed 1 makes videos that the fusion network never trained on (it used seed 0).

The STILL guard (--still; model.fusion.STILL): the same videos fused with each candidate STILL (the motion test
and the fine joins as shipped); the largest STILL with which no video loses 0.01 dB against its per-frame output.

  python scripts/calibrate_fusion.py --corpus data/corpus --videos 60
  python scripts/calibrate_fusion.py --corpus data/corpus --videos 64 --fine --seed 1
  python scripts/calibrate_fusion.py --corpus data/corpus --videos 64 --still --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import run
from PIL import Image

from diffqe.model import checkpoint
from diffqe.model.fusion import BLOCK, FINE_SHARE, MOVED, STILL, calm, fuse_clip, load, screen
from diffqe.model.inference import enhance_planes
from diffqe.train.metrics import clip_dpsnr
from diffqe.train.motion import coded_video

FRAMES = 5  # the centre frame and its neighbours within model.fusion.RADIUS
FINE_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # 0: no fine joins, what the others are held against
STILLS = (8.0, 16.0, 32.0, 64.0)
HARM = 0.01  # dB: the most a video may lose to the fine joins against none, or to the fusion against none


def shares(ref: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The motion test's explained shares of the centre frame's pairs: (truly still blocks, moved blocks), both
    among the blocks that pass the STILL check."""
    r, d = (torch.from_numpy(x).float()[:, None] for x in (ref, dec))
    c, others = FRAMES // 2, [k for k in range(FRAMES) if k != FRAMES // 2]
    quiet, share = screen(d[c:c + 1] / 255, d[others] / 255)
    still = calm(F.avg_pool2d((r[others] - r[c:c + 1]).square(), BLOCK) == 0)
    return share[quiet & still].numpy(), share[quiet & ~still].numpy()


def fused_gains(images: list[np.ndarray], videos: int, seed: int, settings: list[dict]) -> np.ndarray:
    """[videos, 1 + len(SETTINGS)] dPSNR (dB, mean over frames) of each video's per-frame output, then of its fused
    output with each of SETTINGS (``fuse_clip``'s keyword arguments)."""
    model, net = checkpoint.load()[0].eval(), load()
    gains = []
    for i in range(videos):
        ref, dec, _ = coded_video(images, i, frames=2 * FRAMES - 1, seed=seed, busy=i % 4 == 3)
        out = enhance_planes(model, dec)
        gains.append([clip_dpsnr(ref, dec, out)] +
                     [clip_dpsnr(ref, dec, fuse_clip(net, dec, out, **kw)) for kw in settings])
    return np.array(gains)


def report(name: str, values: tuple[float, ...], gains: np.ndarray, against: np.ndarray, baseline: str,
           constant: str) -> float:
    """A table of each value's mean dPSNR and its worst video against AGAINST (its baseline's gains per video);
    returns the largest value with which no video loses over HARM."""
    loss = (gains - against[:, None]).min(0)
    losing = (gains - against[:, None] < -HARM).sum(0)
    print(f"| {name} | mean dPSNR | worst video against {baseline} | videos losing over {HARM:g} dB |\n"
          "|---:|---:|---:|---:|")
    for value, mean, worst, n in zip(values, gains.mean(0), loss, losing):
        print(f"| {value:g} | {mean:+.3f} | {worst:+.3f} | {n} |")
    safe = [value for value, worst in zip(values, loss) if worst >= -HARM]
    chosen = max(safe, default=float("nan"))
    print(f"largest {name} with no video losing over {HARM:g} dB: {chosen:g} ({constant})")
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=60,
                    help="synthetic videos to make; every fourth from the busy series (little stands still)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fine", action="store_true", help="calibrate the fine joins' share instead of the motion test")
    ap.add_argument("--still", action="store_true", help="calibrate the STILL guard instead of the motion test")
    args = ap.parse_args()
    if args.videos < 1:
        ap.error(f"--videos must be at least 1, got {args.videos}")
    images = [np.asarray(Image.open(p)) for p in sorted((args.corpus / "train").glob("*.png"))]
    if not images:
        raise FileNotFoundError(f"no images under {args.corpus}/train; build the corpus with scripts/make_corpus.py")
    if args.fine:
        gains = fused_gains(images, args.videos, args.seed, [{"fine": share} for share in FINE_SHARES])[:, 1:]
        report("fine share", FINE_SHARES, gains, gains[:, 0], "none", f"model.fusion.FINE_SHARE = {FINE_SHARE:g}")
        return 0
    if args.still:
        gains = fused_gains(images, args.videos, args.seed, [{"still": still} for still in STILLS])
        report("STILL", STILLS, gains[:, 1:], gains[:, 0], "per frame", f"model.fusion.STILL = {STILL:g}")
        print(f"per frame (no fusion): mean dPSNR {gains[:, 0].mean():+.3f}")
        return 0
    still, moved = [], []
    for i in range(args.videos):
        ref, dec, _ = coded_video(images, i, frames=FRAMES, seed=args.seed, busy=i % 4 == 3)
        s, m = shares(ref, dec)
        still.append(s)
        moved.append(m)
    s, m = np.concatenate(still), np.concatenate(moved)
    if not len(s) or not len(m):
        raise ValueError(f"{args.videos} videos hold no {'still' if not len(s) else 'moved'} blocks that pass STILL; "
                         "make more (--videos)")
    print(f"{args.videos} videos: {len(s)} truly still and {len(m)} moved blocks pass STILL={STILL:g}",
          file=sys.stderr)
    print("| share explained | still blocks below | moved blocks below |\n|---:|---:|---:|")
    for q in sorted({0.1, 0.2, 0.3, MOVED, float(np.quantile(s, 0.95))}):
        print(f"| {q:.3f} | {np.mean(s < q):.3f} | {np.mean(m < q):.3f} |")
    print(f"95 % of the still blocks: below {np.quantile(s, 0.95):.3f} (model.fusion.MOVED = {MOVED:g})")
    return 0


if __name__ == "__main__":
    run(main)
