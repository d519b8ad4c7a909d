#!/usr/bin/env python3
"""Soft copies of screen and text images, as screen recordings are once scaled or resampled, for the do-no-harm
check on soft text (docs/results.md, "Soft text"): for each image NAME and each of --kinds, OUT/NAME_shift.png
(moved half a pixel up and left, bilinear: the mildest resampling there is), OUT/NAME_soft.png
(train.corpus.soft_copy: shrunk 1.5-3x and scaled back up) and OUT/NAME_upscaled.png (train.corpus.upscaled_copy:
shrunk 1.25-2x and brought back up with Lanczos or bicubic, overshoot and all), OUT/NAME_overtyped.png
(train.corpus.overtyped_copy: pairs of text lines drawn over each other) and OUT/NAME_faint.png
(train.corpus.faint_copy: lines of text a few tens of code values off their ground), each drawn from a seed per
name and kind.  Then, e.g.:

  python scripts/make_soft_screens.py data/corpus/val/*screen*.png --out data/soft_screens
  python scripts/make_soft_screens.py --synthetic 6 --out data/fresh_screens    # screens no model trained on
  python scripts/make_soft_screens.py --synthetic 8 --synthetic-from 100 --kinds upscaled --out data/upscaled_screens
  python scripts/make_soft_screens.py --synthetic 8 --synthetic-from 200 --kinds overtyped --out data/overtyped_screens
  python scripts/make_soft_screens.py --synthetic 8 --synthetic-from 300 --kinds faint --out data/faint_screens
  python scripts/evaluate.py --images data/soft_screens --qps 22,27,32,37,42 --extra-qps "" --out soft.md
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from _common import run
from PIL import Image

from diffqe.train.corpus import faint_copy, overtyped_copy, screen_like, soft_copy, subpixel_shift, upscaled_copy

# Each kind's copy of a picture; the soft copy keeps the stream it had before there were other kinds.
KINDS = {
    "shift": lambda y, name, seed: subpixel_shift(y, 0.5, 0.5),
    "soft": lambda y, name, seed: soft_copy(y, random.Random(f"{seed}:{name}")),
    "upscaled": lambda y, name, seed: upscaled_copy(y, random.Random(f"{seed}:upscaled:{name}")),
    "overtyped": lambda y, name, seed: overtyped_copy(y, random.Random(f"{seed}:overtyped:{name}")),
    "faint": lambda y, name, seed: faint_copy(y, random.Random(f"{seed}:faint:{name}")),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path)
    ap.add_argument("--synthetic", type=int, default=0,
                    help="also this many synthetic screens (train.corpus.screen_like) that no corpus holds (drawn "
                         "from seeds 100000 on), written crisp as well")
    ap.add_argument("--synthetic-from", type=int, default=0,
                    help="number of the first synthetic screen (fresh_screen_K, from seed 100000 + K): a set apart "
                         "from the first one")
    ap.add_argument("--kinds", default="shift,soft", help=f"copies to write, of {', '.join(KINDS)}")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.images and not args.synthetic:
        ap.error("give images and/or --synthetic N")
    kinds = args.kinds.split(",")
    if unknown := sorted(set(kinds) - set(KINDS)):
        ap.error(f"--kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    sources = []
    for path in args.images:
        try:  # corpus images are 8-bit luma already; others are taken as their grey
            with Image.open(path) as im:
                sources.append((path.stem, np.asarray(im.convert("L"))))
        except OSError as e:
            raise ValueError(f"{path}: not a readable image ({e})") from None
    for k in range(args.synthetic_from, args.synthetic_from + args.synthetic):  # corpora seed screen I with the
        # string "SEED:screen:I", never these integers
        name, y = f"fresh_screen_{k:02d}", screen_like(random.Random(100000 + k))
        Image.fromarray(y).save(args.out / f"{name}.png")
        sources.append((name, y))
    for name, y in sources:
        for kind in kinds:
            Image.fromarray(KINDS[kind](y, name, args.seed)).save(args.out / f"{name}_{kind}.png")
    print(f"wrote {len(kinds) * len(sources) + args.synthetic} images to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
