#!/usr/bin/env python3
"""Does the estimated Z follow the input?  For reference images coded at several QPs: how much Z varies
across inputs and across starting-noise seeds, and dPSNR with each input's own Z against the mean Z of all
inputs (the same decoder, Z held constant).  If the two match, the estimator passes no information about the
input and the model behaves as a blind decoder.

  python scripts/probe_z.py --images data/corpus/val [--checkpoint STEM] [--qps 22,32,42] [--crop 320]
"""

from __future__ import annotations

import argparse
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

ORACLE = "own Z, oracle strength"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True, help="folder of reference PNGs")
    ap.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    ap.add_argument("--qps", default="22,32,42")
    ap.add_argument("--crop", type=int, default=320, help="top-left crop of each image (speed)")
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    if not model.uses_z:
        raise ValueError(f"{args.checkpoint}: the NoEst variant has no Z")
    qps = [int(q) for q in args.qps.split(",")]
    inputs = []  # (reference, decoded, QP, input tensor, Z for seeds 0..N-1; seed 0 is the filter's default)
    with torch.inference_mode():
        for path in sorted(args.images.glob("*.png")):
            gt = np.asarray(Image.open(path))[: args.crop, : args.crop]
            for qp in qps:
                decoded = compress_luma(gt, qp)
                y = to_tensor(decoded, 255, torch.device("cpu"))
                zs = torch.cat([model.estimator(y, default_noise(model.cfg.z_dim, 1, s)) for s in range(args.seeds)])
                inputs.append((gt, decoded, qp, y, zs))
        z_all = torch.cat([zs[:1] for *_, zs in inputs])
        z_mean = z_all.mean(0, keepdim=True)
        print(f"{len(inputs)} inputs; mean |Z| {z_all.abs().mean():.4f}; std of Z across inputs {z_all.std(0).mean():.5f}, "
              f"across {args.seeds} seeds {np.mean([zs.std(0).mean().item() for *_, zs in inputs]):.5f} (means over dims)")
        gains: dict[tuple[str, int], list[float]] = {}
        factors: dict[int, list[float]] = {}
        for gt, decoded, qp, y, zs in inputs:
            res = model.decoder(y, zs[:1]) - y
            best = best_scale(res, to_tensor(gt, 255, torch.device("cpu")) - y).item()
            factors.setdefault(qp, []).append(best)
            for name, out in (("own Z", y + res), ("mean Z", model.decoder(y, z_mean)), (ORACLE, y + best * res)):
                out = to_planes(out, 255, gt.dtype)[0]
                gains.setdefault((name, qp), []).append(psnr(out, gt) - psnr(decoded, gt))
    print("| Z | " + " | ".join(f"QP {q}" for q in qps) + " |\n|---|" + "---:|" * len(qps))
    for name in ("own Z", "mean Z", ORACLE):
        print(f"| {name} | " + " | ".join(f"{np.mean(gains[(name, q)]):+.4f}" for q in qps) + " |")
    print("best factor, mean (min..max): " + ", ".join(
        f"QP {q} {np.mean(f):.2f} ({min(f):.2f}..{max(f):.2f})" for q, f in factors.items()))
    return 0


if __name__ == "__main__":
    run(main)
