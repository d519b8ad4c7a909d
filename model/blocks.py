"""Building blocks shared by the networks: residual units, mirror padding, Z-conditioned CBAM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


LEAKY_SLOPE = 0.1


def act() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResidualUnit(nn.Module):
    """x + conv(act(conv(x))), the UNet's unit at every level."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), act(), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Mirror-pad H and W at the bottom/right up to a multiple; returns the original (H, W) to crop back."""
    h, w = x.shape[-2:]
    # Always pad (possibly by zero): a shape-dependent branch would be frozen into an exported graph.
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="reflect"), (h, w)


class ChannelAttention(nn.Module):
    """Eq. (7): sigma(MLP(AvgPool F) + MLP(MaxPool F) + MLP_z(Z)), one weight per channel."""

    def __init__(self, channels: int, reduction: int, z_dim: int | None) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), act(), nn.Linear(hidden, channels))
        self.z_mlp = (
            nn.Sequential(nn.Linear(z_dim, hidden), act(), nn.Linear(hidden, channels)) if z_dim else None
        )

    def forward(self, f: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        logits = self.mlp(f.mean(dim=(2, 3))) + self.mlp(f.amax(dim=(2, 3)))
        if self.z_mlp is not None:
            logits = logits + self.z_mlp(z)
        return torch.sigmoid(logits)[:, :, None, None]


class SpatialAttention(nn.Module):
    """Eq. (8): sigma(conv(cat(mean_c F, max_c F, map(Z)))), one weight per pixel.

    The Z-derived map is a learned projection of Z to one value, broadcast over the frame: Z is global, so
    its map is constant in space and shifts the attention logits by a content-dependent amount.
    """

    def __init__(self, z_dim: int | None, kernel: int = 7) -> None:
        super().__init__()
        self.z_map = nn.Linear(z_dim, 1) if z_dim else None
        self.conv = nn.Conv2d(3 if z_dim else 2, 1, kernel, padding=kernel // 2)

    def forward(self, f: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        maps = [f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)]
        if self.z_map is not None:
            maps.append(self.z_map(z)[:, :, None, None].expand_as(maps[0]))
        return torch.sigmoid(self.conv(torch.cat(maps, dim=1)))


class ZCBAM(nn.Module):
    """Eq. (6): F_c = M_c(F) * F, F_sc = M_s(F_c) * F_c, both attentions conditioned on Z; returns F + F_sc.

    The residual form is how CBAM sits in its own paper (inside residual blocks).  Gating the whole fused
    feature map by two sigmoids (about 0.25 at the start) stalls training: on real x265 pairs the decoder
    with plain gating did not fit even one batch in 300 steps, the residual form did.
    """

    def __init__(self, channels: int, reduction: int, z_dim: int | None) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, z_dim)
        self.spatial = SpatialAttention(z_dim)

    def forward(self, f: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        f_c = self.channel(f, z) * f
        return f + self.spatial(f_c, z) * f_c


def conv_pyramid(c_in: int, channels: tuple[int, ...]) -> nn.Sequential:
    """conv + residual unit per level, max-pool between levels: the encoder's and condition CNN's trunk."""
    layers: list[nn.Module] = []
    for i, c in enumerate(channels):
        if i:
            layers.append(nn.MaxPool2d(2))
        layers += [conv3x3(c_in, c), act(), ResidualUnit(c)]
        c_in = c
    return nn.Sequential(*layers)
