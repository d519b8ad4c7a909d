#!/usr/bin/env python3
"""Ship the mean of several checkpoints of one model (a weight average of fine-tunes from one start, which
keeps what they share and averages out what one run alone picked up): no encoder, fp16 tensors.

  python scripts/average_checkpoints.py runs/s25/run/stage3 runs/s26/run/stage3 --out runs/avg/diffqe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _common import run

from diffqe.model import checkpoint
from diffqe.model.checkpoint import CheckpointError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", type=Path, nargs="+", help="stems of NAME.safetensors + NAME.json pairs")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    loaded = [checkpoint.load(stem) for stem in args.checkpoints]
    model = loaded[0][0]
    if any(m.cfg != model.cfg for m, _ in loaded[1:]):
        raise CheckpointError("the checkpoints have different model configs: only one model's checkpoints average")
    states = [m.state_dict() for m, _ in loaded]
    # Integer buffers (counters) are not weights: the first checkpoint's stand.
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    model.load_state_dict(mean)
    # The QPs any of them trained on: the exported engines' metadata names that range.
    meta = {"averaged": [str(p) for p in args.checkpoints], "steps": [m.get("step") for _, m in loaded],
            "qps": sorted({q for _, m in loaded for q in m.get("qps") or []})}
    checkpoint.save(args.out, model, meta, inference_only=True, dtype=torch.float16)
    print(f"wrote {args.out}.safetensors, the mean of {len(loaded)} checkpoints", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
