"""The whole model: encoder (training), decoder and estimator, with the inference path estimator -> decoder."""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .decoder import Decoder
from .encoder import Encoder
from .estimator import Estimator


def default_noise(z_dim: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """The fixed starting noise of the reverse process: one vector from ``seed``, shared by every frame so
    that a static scene gets the same Z frame after frame."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, z_dim, generator=g).expand(batch, z_dim).contiguous()


class DiffQE(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = Decoder(cfg)
        if cfg.variant != "noest":
            self.encoder = Encoder(cfg)
            self.estimator = Estimator(cfg)

    @property
    def uses_z(self) -> bool:
        return self.cfg.variant != "noest"

    def estimate(self, y: torch.Tensor, noise: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor | None:
        """Z_est for each frame of y [N,1,H,W] in [0,1]; None for the NoEst variant."""
        if not self.uses_z:
            return None
        if noise is None:
            noise = default_noise(self.cfg.z_dim, y.shape[0], seed).to(y.device)
        return self.estimator(y, noise)

    def forward(self, y: torch.Tensor, noise: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        """Inference: enhanced luma from compressed luma, estimator -> decoder."""
        return self.decoder(y, self.estimate(y, noise, seed))
