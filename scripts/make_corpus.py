#!/usr/bin/env python3
"""Build a luma training corpus from folders of images and/or Debian photo packages.

  python scripts/make_corpus.py --images ~/BSDS500 ~/DIV2K --out data/corpus
  python scripts/make_corpus.py --debian --out data/corpus      # photos from Debian packages
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.train.corpus import DEBIAN_PHOTO_PACKAGES, build_corpus, fetch_debian_images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="*", type=Path, default=[], help="folders or files of images")
    ap.add_argument("--debian", action="store_true", help="add photos from Debian packages: " + ", ".join(DEBIAN_PHOTO_PACKAGES))
    ap.add_argument("--debian-cache", type=Path, default=Path("data/debian"), help="where the packages are unpacked")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--screen-fraction", type=float, default=0.1, help="share of synthetic screen/text images")
    ap.add_argument("--screens", type=int, help="exactly this many synthetic screens, whatever --screen-fraction "
                    "(without --images or --debian: a corpus of screens alone, byte-identical to those of a corpus "
                    "with photos and the same seed)")
    ap.add_argument("--downscale", type=float, default=2.0, help="shrink every image at least this much")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--min-side", type=int, default=64)
    ap.add_argument("--levels-fraction", type=float, default=0.25,
                    help="share of photos also written at other black/white levels (full range, crushed blacks)")
    ap.add_argument("--soft-fraction", type=float, default=0.0,
                    help="share of photos also written soft (shrunk 1.5-3x and scaled back up, as upscaled video)")
    ap.add_argument("--recompressed-fraction", type=float, default=0.0,
                    help="share of photos also written after JPEG coding (sources that were compressed before)")
    ap.add_argument("--coded-fraction", type=float, default=0.0,
                    help="share of photos also written after MPEG-2, MPEG-4 part 2, H.264 or Cinepak coding "
                         "(sources delivered as video before the transcode)")
    ap.add_argument("--soft-screen-fraction", type=float, default=0.0,
                    help="share of synthetic screens also written soft (screen recordings scaled: soft text)")
    ap.add_argument("--shifted-screen-fraction", type=float, default=0.0,
                    help="share of synthetic screens also written shifted by a fraction of a pixel (resampled text)")
    ap.add_argument("--upscaled-screen-fraction", type=float, default=0.0,
                    help="share of synthetic screens also written shrunk and brought back up with a sharp kernel "
                         "(Lanczos, bicubic: text with overshoot)")
    ap.add_argument("--overtyped-screen-fraction", type=float, default=0.0,
                    help="share of synthetic screens also written with pairs of text lines drawn over each other")
    ap.add_argument("--faint-screen-fraction", type=float, default=0.0,
                    help="share of synthetic screens also written with lines of faint text (12-40 code values off "
                         "their ground)")
    ap.add_argument("--screen-levels-fraction", type=float, default=0.0,
                    help="share of synthetic screens, their soft, shifted, upscaled, overtyped and faint copies included, also written "
                         "at other black/white levels (full-range screen captures)")
    ap.add_argument("--flat", type=int, default=6, help="flat frames to add (black at 0 and 16, white, grey)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sources = list(args.images)
    if args.debian:
        sources += fetch_debian_images(args.debian_cache)
    if not sources and not args.screens:
        ap.error("give --images and/or --debian, or --screens")
    report = build_corpus(sources, args.out, val_fraction=args.val_fraction, screen_fraction=args.screen_fraction,
                          screens=args.screens,
                          downscale=args.downscale, max_side=args.max_side, min_side=args.min_side,
                          levels_fraction=args.levels_fraction, soft_fraction=args.soft_fraction,
                          recompressed_fraction=args.recompressed_fraction,
                          coded_fraction=args.coded_fraction, soft_screen_fraction=args.soft_screen_fraction,
                          shifted_screen_fraction=args.shifted_screen_fraction,
                          upscaled_screen_fraction=args.upscaled_screen_fraction,
                          overtyped_screen_fraction=args.overtyped_screen_fraction,
                          faint_screen_fraction=args.faint_screen_fraction,
                          screen_levels_fraction=args.screen_levels_fraction,
                          flat=args.flat, seed=args.seed)
    print(f"wrote {report.written['train']} train and {report.written['val']} validation images to {args.out}; "
          f"skipped {len(report.skipped)}", file=sys.stderr)
    if not sum(report.written.values()):
        print("error: no usable image", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run(main)
