"""PyTorch inference on whole luma planes: integer code values in, integer code values out."""

from __future__ import annotations

import numpy as np
import torch

from .diffqe import DiffQE
from .mirror import mirror_average


def scale_correction(x: torch.Tensor, out: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """The input plus STRENGTH times the model's correction OUT - X (1: OUT itself, untouched; 0: X).  A tensor
    STRENGTH (a CUDA graph's input, which each frame may set anew) always scales."""
    return out if isinstance(strength, float | int) and strength == 1 else x + strength * (out - x)


def to_tensor(planes: np.ndarray, peak: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[H,W] or [N,H,W] integer luma -> float32 [N,1,H,W] in [0,1]."""
    t = torch.from_numpy(planes.astype(np.float32)).to(device) / peak
    return t.reshape(-1, 1, *t.shape[-2:])


def to_planes(t: torch.Tensor, peak: int, dtype: np.dtype) -> np.ndarray:
    """float [N,1,H,W] in [0,1] -> rounded, clipped integer [N,H,W]."""
    return (t[:, 0] * peak).round_().clamp_(0, peak).cpu().numpy().astype(dtype)


@torch.inference_mode()
def restore(model: DiffQE, y: torch.Tensor, *, seed: int = 0, ensemble: int = 1) -> torch.Tensor:
    """float [N,1,H,W] in [0,1] -> the estimator -> decoder path's output, unscaled and unrounded, averaged
    over ``ensemble`` mirrored copies (model.mirror)."""
    z = model.estimate(y, seed=seed)
    return mirror_average(lambda t: model.decoder(t, z), y, ensemble)


def enhance_planes(model: DiffQE, planes: np.ndarray, *, bit_depth: int = 8, seed: int = 0,
                   ensemble: int = 1, strength: float = 1.0) -> np.ndarray:
    """Enhance integer luma planes ([H,W] or [N,H,W]) with ``restore``, the correction scaled by ``strength``
    (scale_correction), rounded as the filter rounds; same shape out."""
    peak = (1 << bit_depth) - 1
    y = to_tensor(planes, peak, next(model.parameters()).device)
    out = scale_correction(y, restore(model, y, seed=seed, ensemble=ensemble), strength)
    return to_planes(out, peak, planes.dtype).reshape(planes.shape)
