#!/usr/bin/env python3
"""Parameters and FLOPs of the inference path (estimator + decoder) per luma pixel and per frame.

  python scripts/model_stats.py [--checkpoint STEM | --model-config JSON | --variant full] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import run
from torch.utils.flop_counter import FlopCounterMode

from diffqe.model import checkpoint
from diffqe.model.config import ModelConfig
from diffqe.model.diffqe import DiffQE


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--model-config", type=Path, help="JSON with ModelConfig fields, e.g. train/configs/unshuffle2.json")
    ap.add_argument("--variant", choices=("full", "noest", "nodiff"), default="full")
    ap.add_argument("--size", default="1920x1080")
    args = ap.parse_args()
    if args.checkpoint:
        model = checkpoint.load(args.checkpoint)[0]
    else:
        cfg = ModelConfig.load(args.model_config) if args.model_config else ModelConfig(variant=args.variant)
        model = DiffQE(cfg).eval()
    w, h = (int(v) for v in args.size.split("x"))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, h, w))
    flops = counter.get_flop_counts()
    pixels = w * h
    print(f"variant {model.cfg.variant}, frame {w}x{h} (FLOPs = 2 x multiply-adds)")
    print("part        params    MFLOP/pixel  TFLOP/frame")
    for part in ("estimator", "decoder"):
        mod = getattr(model, part, None)
        if mod is None:
            continue
        params = sum(p.numel() for p in mod.parameters())
        f = sum(flops.get(f"DiffQE.{part}", {}).values())
        print(f"{part:10s} {params:9,d}  {f / pixels / 1e6:11.3f}  {f / 1e12:11.3f}")
    total = counter.get_total_flops()
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    print(f"{'total':10s} {params:9,d}  {total / pixels / 1e6:11.3f}  {total / 1e12:11.3f}")
    if hasattr(model, "encoder"):
        print(f"(training-only encoder: {sum(p.numel() for p in model.encoder.parameters()):,d} params)")
    return 0


if __name__ == "__main__":
    run(main)
