"""Decoder: a UNet of residual units whose skip fusions go through Z-conditioned CBAM (Eqs. 6-9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResidualUnit, ZCBAM, act, conv3x3, pad_to_multiple
from .config import ModelConfig


class UpFuse(nn.Module):
    """Up-sample the coarser level, concatenate the skip, attend with Z-CBAM, reduce, residual unit."""

    def __init__(self, c_coarse: int, c_fine: int, reduction: int, z_dim: int | None) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_coarse, c_fine, 2, stride=2)
        self.cbam = ZCBAM(2 * c_fine, reduction, z_dim)
        self.reduce = nn.Sequential(nn.Conv2d(2 * c_fine, c_fine, 1), act(), ResidualUnit(c_fine))

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return self.reduce(self.cbam(torch.cat([skip, self.up(coarse)], dim=1), z))


class LightUp(nn.Module):
    """The light finest level's fusion (``cfg.light_finest``): up-sample the coarser level, add the skip."""

    def __init__(self, c_coarse: int, c_fine: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_coarse, c_fine, 2, stride=2)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return skip + self.up(coarse)


class Decoder(nn.Module):
    """Compressed Y [N,1,H,W] and Z [N,D] -> enhanced Y, Eq. (9): x_out = x_in + x_res.

    Any H x W of at least ``cfg.min_side``: the frame is mirror-padded to the UNet's multiple and cropped
    back.  The last convolution starts at zero, so an untrained decoder is the identity.  A frame (or tile)
    of one single value comes back unchanged: it has no coding artefact to remove, and a change of even one
    code value costs a lossless-coded black or flat frame its whole PSNR.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.decoder_channels
        z_dim = None if cfg.variant == "noest" else cfg.z_dim
        self.multiple = cfg.pad_multiple
        self.unshuffle = cfg.input_unshuffle
        planes = self.unshuffle**2
        light = cfg.light_finest
        self.head = nn.Sequential(conv3x3(planes, ch[0]), act(), *([] if light else [ResidualUnit(ch[0])]))
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv3x3(ch[i - 1], ch[i]), act(), ResidualUnit(ch[i]))
            for i in range(1, len(ch))
        )
        self.up = nn.ModuleList(
            LightUp(ch[1], ch[0]) if light and i == 0 else UpFuse(ch[i + 1], ch[i], cfg.cbam_reduction, z_dim)
            for i in reversed(range(len(ch) - 1))
        )
        self.tail = conv3x3(ch[0], planes)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The UNet's encoder path on a padded frame: one feature map per level, finest first (no Z here)."""
        skips = [self.head(F.pixel_unshuffle(x, self.unshuffle))]
        for down in self.down:
            skips.append(down(skips[-1]))
        return skips

    def features(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The UNet on a padded frame up to the tail: the finest level's fused features."""
        skips = self.levels(x)
        f = skips.pop()
        for up in self.up:
            f = up(f, skips.pop(), z)
        return f

    def forward(self, y: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(y, self.multiple)
        res = F.pixel_shuffle(self.tail(self.features(x, z)), self.unshuffle)[..., :h, :w]
        flat = y.amax(dim=(1, 2, 3), keepdim=True) == y.amin(dim=(1, 2, 3), keepdim=True)
        return torch.where(flat, y, y + res)
