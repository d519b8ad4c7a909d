"""Model hyper-parameters, stored beside every checkpoint as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

Variant = Literal["full", "noest", "nodiff"]
MAX_STRENGTH = 2.0  # the largest correction scale the filter offers: twice what the model was trained to apply
PYRAMID_UNSHUFFLE = 4  # the encoder's and the estimator's condition CNN pixel-unshuffle the frame by this


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three networks and of the diffusion.

    ``variant`` selects the paper's Table 2 ablations: ``noest`` is the decoder without Z, ``nodiff``
    regresses Z straight from the condition vector instead of denoising it.  ``input_unshuffle`` = 2 starts
    the decoder's UNet at half resolution on the pixel-unshuffled frame (4 channels) and pixel-shuffles the
    residual back: no full-resolution level, about a quarter fewer FLOPs per pixel (docs/performance.md).
    ``condition_highpass`` feeds the estimator's condition CNN the frame's high-pass residual beside the frame
    (see estimator.ConditionNet).  ``light_finest`` keeps of the decoder's full-resolution level only its first
    convolution, the up-sampled coarser level added to it, and the tail (no residual units, no Z-CBAM there):
    about a quarter fewer FLOPs per pixel, and no 32-channel 3x3 convolution left (docs/performance.md).
    """

    variant: Variant = "full"
    z_dim: int = 256
    decoder_channels: tuple[int, ...] = (32, 64, 128, 256)
    encoder_channels: tuple[int, ...] = (64, 128, 256)
    condition_channels: tuple[int, ...] = (48, 96, 192)
    cbam_reduction: int = 8
    denoiser_hidden: int = 512
    denoiser_layers: int = 3
    diffusion_steps: int = 4
    noise_schedule: Literal["linear", "cosine"] = "linear"
    prediction: Literal["x0", "eps"] = "x0"
    qp_max: int = 51
    input_unshuffle: int = 1
    condition_highpass: bool = False
    light_finest: bool = False

    def __post_init__(self) -> None:
        if self.variant not in ("full", "noest", "nodiff"):
            raise ValueError(f"unknown variant {self.variant!r}; use full, noest or nodiff")
        if self.input_unshuffle not in (1, 2, 4):
            raise ValueError(f"input_unshuffle must be 1, 2 or 4, got {self.input_unshuffle}")
        if self.light_finest and len(self.decoder_channels) < 2:
            raise ValueError("light_finest needs a decoder of two or more levels")
        for name in ("decoder_channels", "encoder_channels", "condition_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def pad_multiple(self) -> int:
        """Frame sides are mirror-padded to this multiple: 2 per decoder level and the decoder's input
        unshuffle, and the encoder's and estimator's pixel-unshuffle."""
        return max(2 ** (len(self.decoder_channels) - 1) * self.input_unshuffle, PYRAMID_UNSHUFFLE)

    @property
    def min_side(self) -> int:
        """Smallest frame side the networks accept: mirror padding needs a side longer than the pad, and the
        encoder's and estimator's pyramids (pixel-unshuffle, then a max-pool per further level) a pixel at
        their coarsest level."""
        levels = max(len(self.encoder_channels), len(self.condition_channels))
        return max(self.pad_multiple, PYRAMID_UNSHUFFLE * 2 ** (levels - 1))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
