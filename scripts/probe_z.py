#!/usr/bin/env python3
r"""Does the estimated Z follow the input?  For reference images coded at several QPs: how much Z varies
across inputs and across starting-noise seeds, and dPSNR with each input's own Z against the mean Z of all
inputs (the same decoder, Z held constant).  If the two match, the estimator passes no information about the
input and the model behaves as a blind decoder.

With --fit-steps N it also bounds what an estimator that knew the QP could give this decoder: one Z per QP
(and, as the control, one Z for all QPs) fitted by gradient descent through the frozen decoder on half the
sources, scored on the other half, then the halves swapped.  Frames of one clip named NAME_frameK.png count
as one source, so that they stay on one side.

  python scripts/probe_z.py --images data/corpus/val [--checkpoint STEM] [--qps 22,32,42] [--crop 320]
      [--fit-steps 150]
  for c in vtest Megamind tree carphone_pristine bikes bigbuckbunny; do
      ffmpeg -i data/clips/$c.mkv -vf select='not(mod(n\,6))' -vsync 0 -frames:v 2 -start_number 0 \
          frames/${c}_frame%d.png; done
  python scripts/probe_z.py --images frames --crop 100000 --seeds 2 --fit-steps 150
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch
from _common import run
from PIL import Image

from diffqe.model import checkpoint
from diffqe.model.diffqe import default_noise
from diffqe.model.inference import to_planes, to_tensor
from diffqe.train.codec import compress_luma
from diffqe.train.metrics import best_scale, psnr
from diffqe.train.z_targets import fit_z

ORACLE = "own Z, oracle strength"
FIT_ALL, FIT_QP = "Z fitted on other sources, all QPs", "Z fitted on other sources, per QP"


def gain(out: torch.Tensor, gt: np.ndarray, decoded: np.ndarray) -> float:
    """dPSNR (dB) of a decoder output in [0, 1], rounded to code values as the filter rounds."""
    return psnr(to_planes(out, 255, gt.dtype)[0], gt) - psnr(decoded, gt)


def crop_sampler(pairs: list[tuple[torch.Tensor, torch.Tensor]], seed: int, crop: int = 96, batch: int = 4):
    """Random 8-aligned square crops of PAIRS (reference, decoded; [1,1,H,W] tensors), as large as the smallest
    image allows up to CROP, BATCH at a time: what fit_z fits on."""
    rng = np.random.default_rng(seed)
    c = min(crop, *(min(gt.shape[-2:]) for gt, _ in pairs)) // 8 * 8

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        crops = []
        for i in rng.integers(len(pairs), size=batch):
            r, q = (rng.integers(0, (n - c) // 8 + 1) * 8 for n in pairs[i][0].shape[-2:])
            crops.append([t[..., r : r + c, q : q + c] for t in pairs[i]])
        gt_b, y_b = (torch.cat(ts) for ts in zip(*crops))
        return gt_b, y_b

    return sample


def fitted_gains(model, inputs, z_mean: torch.Tensor, qps: list[int], steps: int) -> dict[tuple[str, int], list[float]]:
    """dPSNR of every input decoded with Zs fitted (fit_z) on the sources of the other fold."""
    model.requires_grad_(False)
    sources = sorted({src for src, *_ in inputs})
    if len(sources) < 2:
        raise ValueError(f"--fit-steps fits on one half of the sources and scores the other: it needs two or more "
                         f"sources, found {sources} (the frames of one clip, NAME_frameK.png, are one source)")
    gains: dict[tuple[str, int], list[float]] = {}
    for fold in (0, 1):
        held = {s for i, s in enumerate(sources) if i % 2 == fold}
        fit = [(to_tensor(gt, 255), y, qp) for src, gt, _, qp, y, _ in inputs if src not in held]
        fit_on = lambda chosen: fit_z(model.decoder, crop_sampler(chosen, fold), z_mean, steps)  # noqa: E731
        z_all = fit_on([(g, y) for g, y, _ in fit])
        z_qp = {q: fit_on([(g, y) for g, y, qp in fit if qp == q]) for q in qps}
        with torch.inference_mode():
            for src, gt, decoded, qp, y, _ in inputs:
                if src in held:
                    for name, z in ((FIT_ALL, z_all), (FIT_QP, z_qp[qp])):
                        gains.setdefault((name, qp), []).append(gain(model.decoder(y, z), gt, decoded))
    return gains


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="folder of reference PNGs")
    ap.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    ap.add_argument("--qps", default="22,32,42")
    ap.add_argument("--crop", type=int, default=320, help="top-left crop of each image (speed)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--fit-steps", type=int, default=0, help="steps of each fitted Z (0: no fitted rows)")
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    if not model.uses_z:
        raise ValueError(f"{args.checkpoint}: the NoEst variant has no Z")
    qps = [int(q) for q in args.qps.split(",")]
    inputs = []  # (source, reference, decoded, QP, input, Z for seeds 0..N-1; seed 0 is the filter's default)
    with torch.inference_mode():
        for path in sorted(args.images.glob("*.png")):
            gt = np.asarray(Image.open(path))[: args.crop, : args.crop]
            for qp in qps:
                decoded = compress_luma(gt, qp)
                y = to_tensor(decoded, 255, torch.device("cpu"))
                zs = torch.cat([model.estimator(y, default_noise(model.cfg.z_dim, 1, s)) for s in range(args.seeds)])
                inputs.append((re.sub(r"_frame\d+$", "", path.stem), gt, decoded, qp, y, zs))
        z_all = torch.cat([zs[:1] for *_, zs in inputs])
        z_mean = z_all.mean(0, keepdim=True)
        print(f"{len(inputs)} inputs; mean |Z| {z_all.abs().mean():.4f}; std of Z across inputs {z_all.std(0).mean():.5f}, "
              f"across {args.seeds} seeds {np.mean([zs.std(0).mean().item() for *_, zs in inputs]):.5f} (means over dims)")
        gains: dict[tuple[str, int], list[float]] = {}
        factors: dict[int, list[float]] = {}
        for _, gt, decoded, qp, y, zs in inputs:
            res = model.decoder(y, zs[:1]) - y
            best = best_scale(res, to_tensor(gt, 255, torch.device("cpu")) - y).item()
            factors.setdefault(qp, []).append(best)
            for name, out in (("own Z", y + res), ("mean Z", model.decoder(y, z_mean)), (ORACLE, y + best * res)):
                gains.setdefault((name, qp), []).append(gain(out, gt, decoded))
    rows = ["own Z", "mean Z", ORACLE]
    if args.fit_steps:
        gains.update(fitted_gains(model, inputs, z_mean, qps, args.fit_steps))
        rows += [FIT_ALL, FIT_QP]
    print("| Z | " + " | ".join(f"QP {q}" for q in qps) + " |\n|---|" + "---:|" * len(qps))
    for name in rows:
        print(f"| {name} | " + " | ".join(f"{np.mean(gains[(name, q)]):+.4f}" for q in qps) + " |")
    print("best factor, mean (min..max): " + ", ".join(
        f"QP {q} {np.mean(f):.2f} ({min(f):.2f}..{max(f):.2f})" for q, f in factors.items()))
    return 0


if __name__ == "__main__":
    run(main)
