#!/usr/bin/env python3
"""dPSNR and dSSIM of a checkpoint per QP and mixed, on reference images/clips encoded on the fly.

  python scripts/evaluate.py --images data/corpus/val --qps 27,32,37,42 --extra-qps 30,40 --crf 28
  python scripts/evaluate.py --clips ref1.mkv ref2.y4m --checkpoint runs/full/stage2 --out docs/eval.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.model import checkpoint
from diffqe.train.evaluate import Condition, evaluate, load_sources, markdown
from diffqe.train.pairs import PAPER_QPS


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=checkpoint.SHIPPED)
    ap.add_argument("--images", nargs="*", type=Path, default=[], help="reference images or folders of them")
    ap.add_argument("--clips", nargs="*", type=Path, default=[], help="lossless reference clips")
    ap.add_argument("--max-frames", type=int, default=30)
    ap.add_argument("--qps", type=ints, default=list(PAPER_QPS), help="all-intra QPs averaged into 'mixed'")
    ap.add_argument("--extra-qps", type=ints, default=[], help="further all-intra QPs, reported apart")
    ap.add_argument("--crf", type=float, nargs="*", default=[], help="random-access x265 CRF encodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the markdown table here (default: stdout)")
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    sources = load_sources(args.images, args.clips, args.max_frames)
    conditions = [Condition(qp=q) for q in args.qps + args.extra_qps] + [Condition(crf=c) for c in args.crf]
    table = evaluate(model, sources, conditions, tuple(args.qps), args.seed)
    text = markdown(table, f"{args.checkpoint} on {len(sources)} sources")
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    run(main)
