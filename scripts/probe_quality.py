#!/usr/bin/env python3
"""Could a per-frame quality signal (what the estimator is for) help the decoder?  On one crop of each
(GT, decoded, QP) pair: how well the decoder's own pooled features (mean and spread of every channel at every
level of its encoder path) predict the QP, by ridge regression fitted on the training split; then validation
dPSNR with the residual scaled by the best factor for its QP (fitted on the training crops), chosen with the
true QP and with the predicted one, and by each crop's own best factor (an oracle).

  python scripts/probe_quality.py --pairs data/pairs/manifest.json [--checkpoint STEM] [--crop 192]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import run

from diffqe.model import checkpoint
from diffqe.model.blocks import pad_to_multiple
from diffqe.train.metrics import best_scale, patch_dpsnr
from diffqe.train.pairs import Pair, load_pairs

FACTORS = np.round(np.arange(0.5, 1.61, 0.05), 2)


def crops(pairs: list[Pair], size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One crop per pair, aligned to the 8x8 grid; pairs smaller than SIZE are left out."""
    rng = np.random.default_rng(seed)
    ys, gts, qps = [], [], []
    for p in pairs:
        h, w = p.gt.shape
        if min(h, w) < size:
            continue
        top, left = 8 * rng.integers((h - size) // 8 + 1), 8 * rng.integers((w - size) // 8 + 1)
        window = (slice(top, top + size), slice(left, left + size))
        ys.append(p.decoded[window])
        gts.append(p.gt[window])
        qps.append(p.qp)
    if len(set(qps)) < 2:
        raise ValueError(f"need crops at two QPs or more, at least {size}px; got QPs {sorted(set(qps))}")
    as_tensor = lambda a: torch.from_numpy(np.stack(a)[:, None] / 255.0).float()  # noqa: E731
    return as_tensor(ys), as_tensor(gts), np.array(qps)


@torch.inference_mode()
def features_and_residuals(model, y: torch.Tensor, batch: int = 32) -> tuple[np.ndarray, torch.Tensor]:
    feats, res = [], []
    for i in range(0, len(y), batch):
        b = y[i : i + batch]
        levels = model.decoder.levels(pad_to_multiple(b, model.decoder.multiple)[0])
        feats.append(torch.cat([torch.cat([f.mean((2, 3)), f.std((2, 3))], 1) for f in levels], 1))
        res.append(model(b) - b)
    return torch.cat(feats).double().numpy(), torch.cat(res)


def dpsnr(y: torch.Tensor, gt: torch.Tensor, res: torch.Tensor, factor: np.ndarray) -> np.ndarray:
    """Per crop, with the dPSNR loss's floor: a crop the codec kept lossless counts as 0 dB."""
    return patch_dpsnr(y + torch.from_numpy(np.asarray(factor, np.float32))[:, None, None, None] * res, gt, y).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="manifest.json from scripts/make_pairs.py (train and val)")
    ap.add_argument("--checkpoint", help="default: the shipped weights")
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--ridge", type=float, default=100.0)
    args = ap.parse_args()
    model, _ = checkpoint.load(args.checkpoint)
    (yt, gtt, qt), (yv, gtv, qv) = (crops(load_pairs(args.pairs, split), args.crop, seed)
                                    for seed, split in enumerate(("train", "val")))
    (ft, rt), (fv, rv) = features_and_residuals(model, yt), features_and_residuals(model, yv)

    mu, sd = ft.mean(0), ft.std(0) + 1e-6
    a, b = (ft - mu) / sd, (fv - mu) / sd
    w = np.linalg.solve(a.T @ a + args.ridge * np.eye(a.shape[1]), a.T @ (qt - qt.mean()))
    predicted = b @ w + qt.mean()
    levels = sorted(set(qt))
    print(f"{len(qt)} training and {len(qv)} validation crops of {args.crop}px; QP from the decoder's pooled features: "
          f"correlation {np.corrcoef(predicted, qv)[0, 1]:.3f}, mean error {np.abs(predicted - qv).mean():.2f}; "
          "mean prediction per QP " + ", ".join(f"{q}: {predicted[qv == q].mean():.1f}" for q in levels))

    best = {q: FACTORS[np.argmax([dpsnr(yt[qt == q], gtt[qt == q], rt[qt == q], np.full((qt == q).sum(), f)).mean()
                                  for f in FACTORS])] for q in levels}
    print("best factor per QP on the training crops: " + ", ".join(f"{q}: {f:.2f}" for q, f in best.items()))
    oracle = best_scale(rv, gtv - yv).numpy()
    rows = {
        "decoder as is": np.ones(len(qv)),
        "factor of the true QP": np.interp(qv, levels, [best[q] for q in levels]),
        "factor of the predicted QP": np.interp(predicted, levels, [best[q] for q in levels]),
        "each crop's own best factor (oracle)": oracle,
    }
    print("\n| validation dPSNR (dB) | " + " | ".join(f"QP {q}" for q in levels) + " | mean |\n|---|" + "---:|" * (len(levels) + 1))
    for name, factor in rows.items():
        d = dpsnr(yv, gtv, rv, factor)
        print(f"| {name} | " + " | ".join(f"{d[qv == q].mean():+.3f}" for q in levels) + f" | {d.mean():+.3f} |")
    return 0


if __name__ == "__main__":
    run(main)
