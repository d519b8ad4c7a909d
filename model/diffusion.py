"""Noise schedule and deterministic sampler for the feature-vector diffusion (pure functions, no networks).

The estimator denoises a vector Z over a handful of steps (DiffIR uses T = 4), so everything here works on
[N, D] tensors and a caller-supplied denoiser ``denoise(z_t, t) -> prediction``.  Sampling uses the DDIM
update with eta = 0: the result depends only on the starting noise, which the caller passes in, so the same
frame and noise always give the same Z (no flicker between frames).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

ScheduleKind = Literal["linear", "cosine"]
Prediction = Literal["x0", "eps"]


@dataclass(frozen=True)
class Schedule:
    """alpha_bar[t] for t = 1..T (index 0 is t = 1): the signal fraction of q(z_t | z_0), Eq. (2)."""

    alpha_bar: tuple[float, ...]

    @property
    def steps(self) -> int:
        return len(self.alpha_bar)


def make_schedule(kind: ScheduleKind, steps: int) -> Schedule:
    """Linear betas from 0.1 to 0.99 (DiffIR's few-step choice) or the cosine schedule of Nichol & Dhariwal."""
    if steps < 1:
        raise ValueError(f"diffusion needs at least one step, got {steps}")
    if kind == "linear":
        betas = [0.1 + (0.99 - 0.1) * i / max(steps - 1, 1) for i in range(steps)]
        alpha_bar, acc = [], 1.0
        for beta in betas:
            acc *= 1.0 - beta
            alpha_bar.append(acc)
    elif kind == "cosine":
        f = lambda t: math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        alpha_bar = [max(f(t) / f(0), 1e-4) for t in range(1, steps + 1)]
    else:
        raise ValueError(f"unknown noise schedule {kind!r}; use 'linear' or 'cosine'")
    return Schedule(tuple(alpha_bar))


def q_sample(schedule: Schedule, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process, Eq. (2): sqrt(ab_t) z0 + sqrt(1 - ab_t) eps, with t in 1..T per row."""
    ab = torch.tensor(schedule.alpha_bar, dtype=z0.dtype, device=z0.device)[t - 1].unsqueeze(-1)
    return ab.sqrt() * z0 + (1.0 - ab).sqrt() * noise


def sample(
    schedule: Schedule,
    denoise: Callable[[torch.Tensor, int], torch.Tensor],
    z_T: torch.Tensor,
    prediction: Prediction = "x0",
) -> torch.Tensor:
    """Run the reverse process from z_T down to z_0 with deterministic DDIM steps.

    ``denoise(z_t, t)`` returns the network's prediction of z_0 (``"x0"``) or of the noise (``"eps"``,
    Eq. 4).  The loop is over Python ints, so it unrolls into a fixed graph when traced for ONNX.
    """
    z = z_T
    for t in range(schedule.steps, 0, -1):
        ab_t = schedule.alpha_bar[t - 1]
        ab_prev = schedule.alpha_bar[t - 2] if t > 1 else 1.0
        out = denoise(z, t)
        if prediction == "x0":
            z0, eps = out, (z - math.sqrt(ab_t) * out) / math.sqrt(1.0 - ab_t)
        else:
            z0, eps = (z - math.sqrt(1.0 - ab_t) * out) / math.sqrt(ab_t), out
        z = math.sqrt(ab_prev) * z0 + math.sqrt(1.0 - ab_prev) * eps if t > 1 else z0
    return z
