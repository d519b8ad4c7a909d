#!/usr/bin/env python3
"""Encode a corpus with x265 all-intra into (GT, decoded, QP) pairs, cached and resumable.

  python scripts/make_pairs.py --corpus data/corpus --out data/pairs                # QPs 27/32/37/42
  python scripts/make_pairs.py --corpus data/corpus --out data/pairs --qp-range 22:45 --per-image 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.train.pairs import PAPER_QPS, make_pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--qps", default=",".join(map(str, PAPER_QPS)), help="every image at each of these QPs")
    ap.add_argument("--qp-range", help="LO:HI, draw --per-image QPs per image from this range instead")
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--preset", default="medium", help="x265 preset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int)
    args = ap.parse_args()
    qp_range = tuple(int(v) for v in args.qp_range.split(":")) if args.qp_range else None
    qps = tuple(int(v) for v in args.qps.split(","))
    manifest = make_pairs(args.corpus, args.out, qps=qps, qp_range=qp_range, per_image=args.per_image,
                          seed=args.seed, preset=args.preset, workers=args.workers)
    print(f"pairs ready: {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
