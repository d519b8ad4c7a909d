"""Estimator: compressed Y -> condition vector C_vec -> T-step diffusion over Z -> Z_est."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import diffusion
from .blocks import act, conv_pyramid, pad_to_multiple
from .config import PYRAMID_UNSHUFFLE as UNSHUFFLE, ModelConfig

TIME_DIM = 32
HIGHPASS_GAIN = 8.0  # a coding residual of a few code values becomes ~0.1, the frame's own scale


class ConditionNet(nn.Module):
    """Compressed Y -> C_vec: pixel-unshuffle, conv pyramid, global average pool (one vector per frame).

    With ``cfg.condition_highpass`` the frame's high-pass residual (the frame minus its 3x3 mean, amplified)
    comes in beside it.  From the frame alone, convolutions averaged over the whole frame are dominated by
    its content and brightness: trained to give QP 22 and QP 42 codings of one picture different Zs, they
    gave both the same (docs/training.md, step 13).  How much fine detail and noise the coding left is the
    quality cue, as in no-reference quality metrics (BRISQUE's mean-subtracted coefficients)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.highpass = cfg.condition_highpass
        self.trunk = conv_pyramid(UNSHUFFLE**2 * (2 if self.highpass else 1), cfg.condition_channels)
        self.fc = nn.Linear(cfg.condition_channels[-1], cfg.z_dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x, _ = pad_to_multiple(y, UNSHUFFLE)
        if self.highpass:
            x = torch.cat([x, HIGHPASS_GAIN * (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1))], 1)
        return self.fc(self.trunk(F.pixel_unshuffle(x, UNSHUFFLE)).mean(dim=(2, 3)))


def timestep_embedding(t: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Sinusoidal embedding of a (Python int) step; a constant in a traced graph.  Computed on ``like``'s
    device: a host-to-device copy here would break CUDA graph capture."""
    freqs = torch.exp(-math.log(1000.0) * torch.arange(TIME_DIM // 2, dtype=like.dtype, device=like.device)
                      / (TIME_DIM // 2))
    angles = t * freqs
    return torch.cat([angles.sin(), angles.cos()]).expand(batch, TIME_DIM)


class Denoiser(nn.Module):
    """MLP over cat(Z_t, C_vec, emb(t)) predicting Z_0 (or the noise, per ``cfg.prediction``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * cfg.z_dim + TIME_DIM
        for _ in range(cfg.denoiser_layers - 1):
            layers += [nn.Linear(width, cfg.denoiser_hidden), act()]
            width = cfg.denoiser_hidden
        layers.append(nn.Linear(width, cfg.z_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, z_t: torch.Tensor, c_vec: torch.Tensor, t: int) -> torch.Tensor:
        return self.mlp(torch.cat([z_t, c_vec, timestep_embedding(t, z_t.shape[0], z_t)], dim=1))


class Estimator(nn.Module):
    """Z_est from compressed Y alone.  ``forward(y, noise)``: noise [N, D] is the start of the reverse
    process; the result is a deterministic function of (y, noise).  The ``nodiff`` variant ignores the
    noise and regresses Z from C_vec with an MLP (the paper's NoDiff ablation)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.condition = ConditionNet(cfg)
        self.direct = cfg.variant == "nodiff"
        self.prediction = cfg.prediction
        self.schedule = diffusion.make_schedule(cfg.noise_schedule, cfg.diffusion_steps)
        if self.direct:
            self.head = nn.Sequential(
                nn.Linear(cfg.z_dim, cfg.denoiser_hidden), act(), nn.Linear(cfg.denoiser_hidden, cfg.z_dim)
            )
        else:
            self.denoiser = Denoiser(cfg)

    def forward(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        c_vec = self.condition(y)
        if self.direct:
            return self.head(c_vec)
        return diffusion.sample(
            self.schedule, lambda z_t, t: self.denoiser(z_t, c_vec, t), noise.to(c_vec.dtype), self.prediction
        )
