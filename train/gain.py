"""Step 7: teach the estimator the decoder's strength (docs/training.md).

The decoder scales its residual by g(Z) = exp(w.Z + b) (``ModelConfig.residual_gain``).  With the decoder
frozen, its residual r = Dec_res(Y, Z) depends on Z only through the first linear layer of each Z-CBAM, so
as long as those projections of Z stay where the trained estimator put them, r is the one computed once per
sample with that estimator's Z.  The estimator and the gain then learn from (Y, r, GT) alone, with a penalty
holding the CBAMs' view of Z in place: a step costs the estimator's ~20 kFLOP per pixel instead of the
decoder's ~1 MFLOP, minutes on a CPU.  The gain that this teaches is checked afterwards with the real decoder.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..model import checkpoint
from ..model.diffqe import DiffQE, default_noise
from ..model.estimator import ConditionNet
from .loop import _log, recon_loss
from .pairs import Pair


@dataclass
class GainConfig:
    steps: int = 3000
    batch: int = 8
    crop: int = 192
    lr: float = 5e-4
    seed: int = 0
    view_weight: float = 10.0  # penalty on the relative change of the CBAMs' view of Z
    val_every: int = 250
    minutes: float = 0.0  # wall-clock budget (0: none)


@dataclass
class Samples:
    """Crops with the frozen decoder's residual: y, gt and r as float32 [N,1,C,C] in [0,1] units."""

    y: torch.Tensor
    gt: torch.Tensor
    res: torch.Tensor
    qp: list[int]


def with_gain(model: DiffQE) -> DiffQE:
    """The same weights in a model whose decoder has the residual gain (starting at 1: the same output)."""
    if model.cfg.residual_gain:
        return model
    gained = DiffQE(replace(model.cfg, residual_gain=True))
    gained.load_state_dict(model.state_dict(), strict=False)
    return gained.eval()


def cbam_view(model: DiffQE) -> torch.Tensor:
    """The rows through which the decoder's CBAMs see Z (first layer of each Z-MLP and each Z-map): [K, D]."""
    rows = []
    for up in model.decoder.up:
        rows += [up.cbam.channel.z_mlp[0].weight, up.cbam.spatial.z_map.weight]
    return torch.cat(rows).detach()


@torch.no_grad()
def make_samples(model: DiffQE, pairs: list[Pair], crop: int, seed: int) -> Samples:
    """One crop per pair (aligned to the 8x8 grid; the whole image if smaller), lossless pairs skipped."""
    rng = np.random.default_rng(seed)
    ys, gts, rs, qps = [], [], [], []
    for i, p in enumerate(pairs):
        h, w = p.gt.shape
        if min(h, w) < crop or np.array_equal(p.decoded, p.gt):
            continue
        top, left = 8 * rng.integers((h - crop) // 8 + 1), 8 * rng.integers((w - crop) // 8 + 1)
        window = (slice(top, top + crop), slice(left, left + crop))
        y = torch.from_numpy(p.decoded[window] / 255.0).float()[None, None]
        z = model.estimator(y, default_noise(model.cfg.z_dim))
        ys.append(y)
        gts.append(torch.from_numpy(p.gt[window] / 255.0).float()[None, None])
        rs.append(model.decoder.residual(y, z))
        qps.append(p.qp)
        if (i + 1) % 100 == 0:
            print(f"residuals {i + 1}/{len(pairs)}", file=sys.stderr)
    if not ys:
        raise ValueError(f"none of {len(pairs)} pairs is lossy and at least {crop}px on its short side")
    return Samples(torch.cat(ys), torch.cat(gts), torch.cat(rs), qps)


def cached_samples(path: Path, model: DiffQE, pairs: list[Pair], crop: int, seed: int) -> Samples:
    """make_samples, kept in PATH so that a resumed run skips the decoder passes."""
    key = {"crop": crop, "seed": seed, "pairs": [p.name for p in pairs]}
    if path.exists():
        saved = torch.load(path)
        if saved["key"] == key:
            return Samples(**saved["samples"])
    samples = make_samples(model, pairs, crop, seed)
    checkpoint.atomic_write(path, lambda tmp: torch.save({"key": key, "samples": asdict(samples)}, tmp))
    return samples


def gained_dpsnr(model: DiffQE, s: Samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample dPSNR (dB, unrounded) with the gain from the current estimator, and without any gain."""
    def dpsnr(out: torch.Tensor) -> torch.Tensor:
        mse = lambda a: (a - s.gt).square().mean(dim=(1, 2, 3))  # noqa: E731
        return 10 * torch.log10(mse(s.y) / mse(out))

    with torch.no_grad():
        z = model.estimator(s.y, default_noise(model.cfg.z_dim, s.y.shape[0]))
        g = torch.exp(model.decoder.gain(z))[:, :, None, None]
        return dpsnr(s.y + g * s.res), dpsnr(s.y + s.res)


def validate(model: DiffQE, s: Samples) -> dict[str, float]:
    gained, plain = gained_dpsnr(model, s)
    out = {"dpsnr": gained.mean().item(), "dpsnr_without_gain": plain.mean().item()}
    for qp in sorted(set(s.qp)):
        sel = torch.tensor([q == qp for q in s.qp])
        out[f"dpsnr_qp{qp}"] = gained[sel].mean().item()
        out[f"worst_qp{qp}"] = gained[sel].min().item()
    return out


def train_gain(run: Path, cfg: GainConfig, init: Path | None, train_pairs: list[Pair], val_pairs: list[Pair]) -> dict:
    """Train (or resume) step 7 from INIT (None: the shipped weights) into RUN/gain; returns the last
    validation metrics."""
    run.mkdir(parents=True, exist_ok=True)
    stem = run / "gain"
    torch.manual_seed(cfg.seed)
    step, elapsed, opt_state = 0, 0.0, None
    if stem.with_suffix(".json").exists():
        model, meta, opt_state = checkpoint.load(stem, with_optimizer=True)
        step, elapsed = meta["step"], meta["elapsed"]
        print(f"resuming step 7 from {stem} at step {step}", file=sys.stderr)
    else:
        model = with_gain(checkpoint.load(init)[0])
        # Steps 2-6 left the condition CNN's pooled features near zero and alike for every input (mean 0.016,
        # spread 0.002 on the validation crops): nothing for the gain to read.  It starts afresh.
        model.estimator.condition = ConditionNet(model.cfg)
    model.eval()  # the decoder is frozen; the estimator has no dropout or norm statistics
    reference = checkpoint.load(init)[0]  # whose Z the CBAMs were trained with, and whose residuals are kept
    train_s = cached_samples(run / "train_samples.pt", reference, train_pairs, cfg.crop, cfg.seed)
    val_s = cached_samples(run / "val_samples.pt", reference, val_pairs, cfg.crop, cfg.seed + 1)
    print(f"{len(train_s.qp)} training and {len(val_s.qp)} validation crops", file=sys.stderr)
    view = cbam_view(model)
    with torch.no_grad():
        z_ref = reference.estimator(train_s.y, default_noise(model.cfg.z_dim, len(train_s.qp)))
    ref_view = z_ref @ view.T
    scale = ref_view.square().mean()

    params = list(model.estimator.parameters()) + list(model.decoder.gain.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if opt_state:
        opt.load_state_dict(opt_state)
    rng = np.random.default_rng(cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)

    def progress() -> float:
        return max(step / cfg.steps, elapsed / (60 * cfg.minutes) if cfg.minutes else 0.0)

    metrics = validate(model, val_s)
    _log(run, {"step": step, **metrics})
    losses, t0 = [], time.time()
    while progress() < 1:
        started = time.time()
        lr = cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress())))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.from_numpy(rng.choice(len(train_s.qp), cfg.batch, replace=False))
        y, gt, res = train_s.y[idx], train_s.gt[idx], train_s.res[idx]
        if rng.random() < 0.5:  # flips: the gain must not depend on orientation
            y, gt, res = y.flip(-1), gt.flip(-1), res.flip(-1)
        z = model.estimator(y, torch.randn(cfg.batch, model.cfg.z_dim, generator=gen))
        out = y + torch.exp(model.decoder.gain(z))[:, :, None, None] * res
        drift = (z @ view.T - ref_view[idx]).square().mean() / scale
        loss = recon_loss(out, gt, y, "dpsnr") + cfg.view_weight * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        elapsed += time.time() - started
        if step % cfg.val_every == 0 or progress() >= 1:
            metrics = validate(model, val_s)
            _log(run, {"step": step, "loss": float(np.mean(losses)), "drift": drift.item(), "lr": lr,
                       "sec_per_step": (time.time() - t0) / len(losses), **metrics})
            losses, t0 = [], time.time()
            checkpoint.save(stem, model, {"step": step, "elapsed": elapsed, "gain": asdict(cfg), "val": metrics},
                            opt.state_dict(), inference_only=True)
    return metrics
