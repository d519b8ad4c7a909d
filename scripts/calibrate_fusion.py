#!/usr/bin/env python3
"""Where to set the fusion's motion test (model.fusion.MOVED): on synthetic all-intra training video
(train.motion, from the corpus's training images), the share of the decoded frames' difference that the test's
fit explains, on blocks whose reference stands truly still (bit-identical over the 3x3 blocks) and on blocks
whose reference moved, among those that pass the STILL check.  MOVED is the value that lets 95 % of the still
ones through.

  python scripts/calibrate_fusion.py --corpus data/corpus --videos 60
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import run
from PIL import Image

from diffqe.model.fusion import BLOCK, MOVED, STILL, calm, screen
from diffqe.train.motion import coded_video

FRAMES = 5  # the centre frame and its neighbours within model.fusion.RADIUS


def shares(ref: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The motion test's explained shares of the centre frame's pairs: (truly still blocks, moved blocks), both
    among the blocks that pass the STILL check."""
    r, d = (torch.from_numpy(x).float()[:, None] for x in (ref, dec))
    c, others = FRAMES // 2, [k for k in range(FRAMES) if k != FRAMES // 2]
    quiet, share = screen(d[c:c + 1] / 255, d[others] / 255)
    still = calm(F.avg_pool2d((r[others] - r[c:c + 1]).square(), BLOCK) == 0)
    return share[quiet & still].numpy(), share[quiet & ~still].numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--videos", type=int, default=60,
                    help="synthetic videos to make; every fourth from the busy series (little stands still)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.videos < 1:
        ap.error(f"--videos must be at least 1, got {args.videos}")
    images = [np.asarray(Image.open(p)) for p in sorted((args.corpus / "train").glob("*.png"))]
    if not images:
        raise FileNotFoundError(f"no images under {args.corpus}/train; build the corpus with scripts/make_corpus.py")
    still, moved = [], []
    for i in range(args.videos):
        ref, dec, _ = coded_video(images, i, frames=FRAMES, seed=args.seed, busy=i % 4 == 3)
        s, m = shares(ref, dec)
        still.append(s)
        moved.append(m)
    s, m = np.concatenate(still), np.concatenate(moved)
    if not len(s) or not len(m):
        raise ValueError(f"{args.videos} videos hold no {'still' if not len(s) else 'moved'} blocks that pass STILL; "
                         "make more (--videos)")
    print(f"{args.videos} videos: {len(s)} truly still and {len(m)} moved blocks pass STILL={STILL:g}",
          file=sys.stderr)
    print("| share explained | still blocks below | moved blocks below |\n|---:|---:|---:|")
    for q in sorted({0.1, 0.2, 0.3, MOVED, float(np.quantile(s, 0.95))}):
        print(f"| {q:.3f} | {np.mean(s < q):.3f} | {np.mean(m < q):.3f} |")
    print(f"95 % of the still blocks: below {np.quantile(s, 0.95):.3f} (model.fusion.MOVED = {MOVED:g})")
    return 0


if __name__ == "__main__":
    run(main)
