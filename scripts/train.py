#!/usr/bin/env python3
"""Train DiffQE: stage 1 (encoder + decoder), stage 2 (estimator), optional stage 3 (joint refinement).

  python scripts/train.py --pairs data/pairs/manifest.json --run runs/full --stage 1 --steps 20000
  python scripts/train.py --pairs data/pairs/manifest.json --run runs/full --stage 2 --steps 10000
  python scripts/train.py ... --variant noest     # Table 2 ablations: noest, nodiff
  python scripts/train.py ... --stage 3 --stills data/stills/stills.json   # + the temporal (flicker) term

The same command runs on CPU (tiny) and CUDA (full); rerunning it resumes from RUN/stageN.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from _common import run

from diffqe.model.config import ModelConfig
from diffqe.train.loop import TrainConfig, pick_device, train
from diffqe.train.pairs import load_pairs
from diffqe.train.stills import load_stills


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=Path, required=True, help="manifest.json from scripts/make_pairs.py")
    ap.add_argument("--run", type=Path, required=True, help="run folder: checkpoints and log.jsonl")
    ap.add_argument("--stage", type=int, choices=(1, 2, 3), required=True)
    ap.add_argument("--variant", choices=("full", "noest", "nodiff"),
                    help="model variant (default: full for stage 1, the starting checkpoint's after)")
    ap.add_argument("--init", type=Path, help="start stage 2/3 from this checkpoint instead of RUN/stage{N-1} "
                    "(e.g. NoDiff's estimator on the full model's stage 1)")
    ap.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget; the LR schedule follows it")
    ap.add_argument("--loss", choices=("l2", "dpsnr"), default="l2",
                    help="reconstruction loss: l2 (the paper) or dpsnr (mean per-patch dPSNR: high-quality input counts)")
    ap.add_argument("--harm-weight", type=float, default=0.0,
                    help="--loss dpsnr: extra weight on patches made worse (2: a 0.1 dB loss costs as much as a 0.3 dB gain)")
    ap.add_argument("--z-weight", type=float, default=1.0,
                    help="stage 3: weight of the Z term (0 to refine inference-only weights, which lack the encoder)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="CUDA arithmetic: bf16 autocast (from scratch) or fp32 (refinements); the CPU is fp32")
    ap.add_argument("--estimator-only", action="store_true",
                    help="stage 3: train the estimator alone through the frozen decoder")
    ap.add_argument("--stills", type=Path, help="stage 3: stills.json from scripts/make_stills.py, for the temporal term")
    ap.add_argument("--temporal-weight", type=float, default=1.0,
                    help="stage 3 with --stills: weight of the flicker term (dB of output change beyond the input's)")
    ap.add_argument("--still-batch", type=int, default=6, help="stage 3 with --stills: crop pairs of stills per step")
    ap.add_argument("--flips", type=int, choices=(2, 4), default=2,
                    help="crop flips: 2 left-right (the shipped steps), 4 also up-down (the mirror ensemble's copies)")
    ap.add_argument("--mirror-weight", type=float, default=0.0,
                    help="stage 3: weight of a second target, the starting weights' four-copy mirror ensemble")
    ap.add_argument("--mirror-copies", type=int, choices=(1, 2, 4), default=4,
                    help="stage 3 with --mirror-weight: mirrored copies the teacher averages (1: its plain output)")
    ap.add_argument("--mirror-gate", action="store_true",
                    help="stage 3 with --mirror-weight: on crops where the teacher's output is worse than the input, "
                         "the reference is the second target instead")
    ap.add_argument("--z-targets", type=str, default="",
                    help="stages 2-3: a Z per QP from scripts/fit_z_table.py as the target instead of the encoder's Z")
    ap.add_argument("--model-config", type=Path, help="JSON with ModelConfig fields (stage 1; --variant overrides its variant)")
    ap.add_argument("--device", default="auto")
    defaults = TrainConfig()
    for name in ("steps", "batch", "patch", "seed", "val_every", "save_every", "log_every", "val_images",
                 "val_stills"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    ap.add_argument("--lr", type=float, default=defaults.lr)
    args = ap.parse_args()
    if args.harm_weight and args.loss != "dpsnr":
        ap.error("--harm-weight weighs dPSNR losses: use it with --loss dpsnr")
    if args.model_config:  # --variant, if given, overrides the file's
        fields_ = json.loads(args.model_config.read_text()) | ({"variant": args.variant} if args.variant else {})
        model_cfg = ModelConfig.from_dict(fields_)
    elif args.variant or args.stage == 1:
        model_cfg = ModelConfig(variant=args.variant or "full")
    else:
        model_cfg = None  # the starting checkpoint's
    if not args.stills:
        args.still_batch = 0
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    train_pairs, val_pairs = load_pairs(args.pairs, "train"), load_pairs(args.pairs, "val")
    if not train_pairs:
        raise ValueError(f"{args.pairs} has no training pairs")
    stills = (load_stills(args.stills, "train"), load_stills(args.stills, "val")) if args.stills else (None, None)
    metrics = train(args.run, cfg, model_cfg, train_pairs, val_pairs, pick_device(args.device), args.init, *stills)
    print(json.dumps(metrics), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
