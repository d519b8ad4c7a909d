#!/usr/bin/env python3
"""Enhance the bundled HEVC sample with the shipped model and print dPSNR against its lossless reference.

  python scripts/demo.py [--sample samples/sample.mp4 --reference samples/reference.mkv] [--checkpoint STEM]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import run

from diffqe.model import checkpoint
from diffqe.model.inference import enhance_planes
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import psnr

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=SAMPLES / "sample.mp4")
    ap.add_argument("--reference", type=Path, default=SAMPLES / "reference.mkv")
    ap.add_argument("--checkpoint", type=Path, default=checkpoint.SHIPPED)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, meta = checkpoint.load(args.checkpoint)
    decoded, reference = read_video_luma(args.sample), read_video_luma(args.reference)
    if len(decoded) != len(reference) or decoded[0].shape != reference[0].shape:
        raise ValueError(f"{args.sample} and {args.reference} differ in frame count or size")
    enhanced = enhance_planes(model, np.stack(decoded), seed=args.seed)
    before = [psnr(d, r) for d, r in zip(decoded, reference)]
    after = [psnr(e, r) for e, r in zip(enhanced, reference)]
    print(f"{args.sample}: {len(decoded)} frames {decoded[0].shape[1]}x{decoded[0].shape[0]}, "
          f"model {args.checkpoint.name} ({model.cfg.variant}, trained step {meta.get('step', 0)})")
    print("frame  PSNR in  PSNR out    dPSNR")
    for i, (b, a) in enumerate(zip(before, after)):
        print(f"{i:5d}  {b:7.3f}  {a:8.3f}  {a - b:+7.3f}")
    print(f"mean   {np.mean(before):7.3f}  {np.mean(after):8.3f}  {np.mean(after) - np.mean(before):+7.3f} dB")
    return 0


if __name__ == "__main__":
    run(main)
