"""Encoder (training only): compressed Y, GT Y and the QP -> feature vector Z_enc."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv_pyramid, pad_to_multiple
from .config import PYRAMID_UNSHUFFLE as UNSHUFFLE, ModelConfig


class Encoder(nn.Module):
    """Eq. (5): x_in = cat(Img, GT (+) QPmap) -> pixel-unshuffle -> convs + max-pool -> GAP -> linear -> Z.

    "(+)" is read as element-wise addition, as the text says ("we first add the QPmap to the ground-truth
    image"): the QP map is a constant plane of QP / qp_max added to GT, both in [0, 1].
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.qp_max = cfg.qp_max
        self.trunk = conv_pyramid(2 * UNSHUFFLE**2, cfg.encoder_channels)
        self.fc = nn.Linear(cfg.encoder_channels[-1], cfg.z_dim)

    def forward(self, y: torch.Tensor, gt: torch.Tensor, qp: torch.Tensor) -> torch.Tensor:
        qp_map = (qp.to(gt.dtype) / self.qp_max)[:, None, None, None]
        x, _ = pad_to_multiple(torch.cat([y, gt + qp_map], dim=1), UNSHUFFLE)
        f = self.trunk(F.pixel_unshuffle(x, UNSHUFFLE))
        # Z is layer-normalised (zero mean, unit variance over its elements): the scale that the
        # diffusion's unit-variance noise assumes.  Unnormalised, Z_enc grew to |z| ~ 300 in training and
        # the estimator's targets were out of all proportion to its noise.
        return F.layer_norm(self.fc(f.mean(dim=(2, 3))), (self.fc.out_features,))
