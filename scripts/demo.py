#!/usr/bin/env python3
"""The main job on the bundled sample: `diffqe enhance` (vspipe enhance.vpy | ffmpeg, lossless output),
then dPSNR of the result against the sample's lossless reference.

  python scripts/demo.py [--sample samples/sample.mp4 --reference samples/reference.mkv] [--backend ort-cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import run

from diffqe.model import checkpoint
from diffqe.model.files import SHIPPED
from diffqe.plugin.cli import main as diffqe_cli
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import psnr

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _trained(meta: dict) -> str:
    """How the checkpoint came to be, from its meta: a training step or a weight average."""
    if "averaged" in meta:
        return f"mean of {len(meta['averaged'])} checkpoints, steps {', '.join(map(str, meta['steps']))}"
    return f"trained step {meta.get('step', 0)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=SAMPLES / "sample.mp4")
    ap.add_argument("--reference", type=Path, default=SAMPLES / "reference.mkv")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", help="inference backend (default: best available)")
    args = ap.parse_args()
    reference = read_video_luma(args.reference)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "enhanced.mkv"
        cli = ["enhance", str(args.sample), str(out), "--lossless", "--seed", str(args.seed),
               "--checkpoint", str(args.checkpoint)] + (["--backend", args.backend] if args.backend else [])
        if code := diffqe_cli(cli):
            return code
        decoded, enhanced = read_video_luma(args.sample), read_video_luma(out)
    if len(decoded) != len(reference) or decoded[0].shape != reference[0].shape:
        raise ValueError(f"{args.sample} and {args.reference} differ in frame count or size")
    before = [psnr(d, r) for d, r in zip(decoded, reference)]
    after = [psnr(e, r) for e, r in zip(enhanced, reference)]
    meta = checkpoint.load(args.checkpoint)[1]
    print(f"{args.sample}: {len(decoded)} frames {decoded[0].shape[1]}x{decoded[0].shape[0]} through "
          f"vspipe enhance.vpy | ffmpeg; model {args.checkpoint.name} ({_trained(meta)})")
    print("frame  PSNR in  PSNR out    dPSNR")
    for i, (b, a) in enumerate(zip(before, after)):
        print(f"{i:5d}  {b:7.3f}  {a:8.3f}  {a - b:+7.3f}")
    print(f"mean   {np.mean(before):7.3f}  {np.mean(after):8.3f}  {np.mean(after) - np.mean(before):+7.3f} dB")
    return 0


if __name__ == "__main__":
    run(main)
