#!/usr/bin/env python3
"""Copy a training checkpoint to the shipped weights: no optimizer state, no encoder, fp16 tensors.

  python scripts/ship_checkpoint.py runs/full/stage2 [--out model/weights/diffqe]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import run

from diffqe.model import checkpoint
from diffqe.model.files import SHIPPED


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, default=SHIPPED)
    args = ap.parse_args()
    model, meta = checkpoint.load(args.checkpoint)
    meta = {k: v for k, v in meta.items() if k != "sampler"} | {"source": str(args.checkpoint)}
    checkpoint.save(args.out, model, meta, inference_only=True, dtype=torch.float16)
    size = args.out.with_suffix(".safetensors").stat().st_size
    print(f"wrote {args.out}.safetensors ({size / 1e6:.1f} MB) and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
