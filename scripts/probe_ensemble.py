#!/usr/bin/env python3
"""Where a model harms a picture, do its mirrored copies disagree on the direction of the correction or only on
its size?  dPSNR of ways to combine the corrections of the copies (model.mirror's FLIPS) of one estimated Z: one
pass; the mean (what ``ensemble`` ships); the median; the mean where every copy agrees in sign and none where
they do not; "minmod", the smallest correction where they agree (a limiter of numerical schemes); the mean
shrunk towards zero by K times the copies' spread.  Each picture is coded all-intra at each QP with x265, as
scripts/evaluate.py codes it.

  python scripts/probe_ensemble.py --images runs/s34/corpus/val/screen_0029.png data/corpus/val --qps 22,32,42
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import run

from diffqe.model import checkpoint
from diffqe.model.mirror import mirrored
from diffqe.train.codec import compress_luma
from diffqe.train.corpus import find_images, load_luma
from diffqe.train.metrics import psnr


@torch.inference_mode()
def corrections(model, y: torch.Tensor, copies: int) -> torch.Tensor:
    """[copies,1,1,H,W]: the decoder's correction of each mirrored copy of y [1,1,H,W], mirrored back."""
    z = model.estimate(y)
    return torch.stack(list(mirrored(lambda t: model.decoder(t, z), y, copies))) - y


def where_signs_agree(value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """VALUE(c) where every copy's correction has one sign, none elsewhere."""
    def combine(c: torch.Tensor) -> torch.Tensor:
        sign = torch.sign(c)
        return torch.where((sign == sign[0]).all(0), value(c), torch.zeros_like(c[0]))
    return combine


def shrunk(k: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def combine(c: torch.Tensor) -> torch.Tensor:
        mean = c.mean(0)
        return torch.sign(mean) * (mean.abs() - k * c.std(0, unbiased=False)).clamp(min=0)
    return combine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, nargs="+", required=True, help="reference images or folders of them")
    ap.add_argument("--qps", default="22,32,42")
    ap.add_argument("--copies", type=int, choices=[2, 4], default=4)
    ap.add_argument("--checkpoint", help="default: the shipped weights")
    ap.add_argument("--max-side", type=int, default=1024, help="larger pictures are cropped to their top left")
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    rules = {"one pass": lambda c: c[0], "mean": lambda c: c.mean(0), "median": lambda c: c.median(0).values,
             "mean where signs agree": where_signs_agree(lambda c: c.mean(0)),
             "minmod": where_signs_agree(lambda c: torch.sign(c[0]) * c.abs().min(0).values),
             "mean - spread/2": shrunk(0.5), "mean - spread": shrunk(1.0)}
    qps = [int(q) for q in args.qps.split(",")]
    gains: dict[tuple[int, str], list[float]] = {}
    for path in find_images(args.images):
        gt = load_luma(path, downscale=1.0, max_side=1 << 16, min_side=16)[: args.max_side, : args.max_side]
        for qp in qps:
            decoded = compress_luma(gt, qp)
            if np.array_equal(decoded, gt):
                continue  # coded losslessly: nothing to gain, and every rule leaves it so (a flat frame)
            y = torch.from_numpy(decoded / 255.0).float()[None, None]
            c = corrections(model, y, args.copies)
            row = {}
            for rule, combine in rules.items():
                out = ((y + combine(c)).clamp(0, 1) * 255).round()[0, 0].numpy()
                row[rule] = psnr(out, gt) - psnr(decoded, gt)
                gains.setdefault((qp, rule), []).append(row[rule])
            print(f"{path.stem} QP {qp}: " + ", ".join(f"{r} {g:+.3f}" for r, g in row.items()), flush=True)
    print(f"\n| dPSNR (dB), {args.copies} copies: mean (worst) | " + " | ".join(f"QP {q}" for q in qps)
          + " |\n|---|" + "---:|" * len(qps))
    for rule in rules:
        print(f"| {rule} | " + " | ".join(f"{np.mean(gains[q, rule]):+.3f} ({min(gains[q, rule]):+.3f})"
                                           if (q, rule) in gains else "-" for q in qps) + " |")
    return 0


if __name__ == "__main__":
    run(main)
