#!/usr/bin/env python3
"""Step 7 of docs/training.md: the estimator learns the decoder's strength (a gain on its residual, read from
Z), with the decoder frozen.  Rerunning the same command resumes from RUN/gain.

  python scripts/train_gain.py --pairs data/pairs/manifest.json --run runs/gain [--init STEM] --minutes 20
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from _common import run

from diffqe.train.gain import GainConfig, train_gain
from diffqe.train.pairs import load_pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True, help="manifest.json from scripts/make_pairs.py")
    ap.add_argument("--run", type=Path, required=True, help="run folder: RUN/gain.{safetensors,json}, log.jsonl")
    ap.add_argument("--init", type=Path, help="weights to start from (default: the shipped ones)")
    for f in fields(GainConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = ap.parse_args()
    train_pairs, val_pairs = load_pairs(args.pairs, "train"), load_pairs(args.pairs, "val")
    if not train_pairs:
        raise ValueError(f"{args.pairs} has no training pairs")
    cfg = GainConfig(**{f.name: getattr(args, f.name) for f in fields(GainConfig)})
    print(json.dumps(train_gain(args.run, cfg, args.init, train_pairs, val_pairs)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
