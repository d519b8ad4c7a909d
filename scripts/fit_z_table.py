#!/usr/bin/env python3
"""Fit one Z per QP through a checkpoint's frozen decoder on training pairs: the target that stage 2 then
teaches the estimator (`train.py --z-targets`) where the weights carry no encoder (docs/training.md, step 13).

  python scripts/fit_z_table.py --pairs runs/s13/pairs/manifest.json --out runs/s13/z_table.safetensors \
      [--checkpoint STEM] [--steps 400]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.model import checkpoint
from diffqe.train.pairs import load_pairs
from diffqe.train.z_targets import fit_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True, help="manifest.json from scripts/make_pairs.py (its training split)")
    ap.add_argument("--out", type=Path, required=True, help="the table, NAME.safetensors")
    ap.add_argument("--checkpoint", type=Path, help="whose decoder (default: the shipped weights)")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per QP, batch 8 crops")
    ap.add_argument("--patch", type=int, default=96, help="crop side (a multiple of 8)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    if not model.uses_z:
        raise ValueError(f"{args.checkpoint}: the NoEst variant has no Z")
    pairs = load_pairs(args.pairs, "train")
    if not pairs:
        raise ValueError(f"{args.pairs} has no training pairs")
    table = fit_table(model, pairs, steps=args.steps, patch=args.patch, seed=args.seed)
    table.save(args.out)
    print(f"wrote {args.out}: Z for QPs {list(table.qps)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
