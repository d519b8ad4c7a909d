#!/usr/bin/env python3
"""Code each corpus image as a short static clip with x265 random-access (for train.py --stills); keeps the
stills whose frames differ, cached and resumable.

  python scripts/make_stills.py --corpus data/corpus --out data/stills          # CRF 22..36, 8 frames
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.train.stills import make_stills


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--crf-range", default="22:36", help="LO:HI, each image's CRF drawn from it")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int)
    args = ap.parse_args()
    lo, hi = (float(v) for v in args.crf_range.split(":"))
    manifest = make_stills(args.corpus, args.out, crf_range=(lo, hi), frames=args.frames, seed=args.seed,
                           workers=args.workers)
    print(f"stills ready: {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
