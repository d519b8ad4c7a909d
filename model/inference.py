"""PyTorch inference on whole luma planes: integer code values in, integer code values out."""

from __future__ import annotations

import numpy as np
import torch

from .diffqe import DiffQE
from .mirror import mirror_average


def to_tensor(planes: np.ndarray, peak: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[H,W] or [N,H,W] integer luma -> float32 [N,1,H,W] in [0,1]."""
    t = torch.from_numpy(planes.astype(np.float32)).to(device) / peak
    return t.reshape(-1, 1, *t.shape[-2:])


def to_planes(t: torch.Tensor, peak: int, dtype: np.dtype) -> np.ndarray:
    """float [N,1,H,W] in [0,1] -> rounded, clipped integer [N,H,W]."""
    return (t[:, 0] * peak).round_().clamp_(0, peak).cpu().numpy().astype(dtype)


@torch.inference_mode()
def enhance_planes(model: DiffQE, planes: np.ndarray, *, bit_depth: int = 8, seed: int = 0,
                   ensemble: int = 1) -> np.ndarray:
    """Enhance integer luma planes ([H,W] or [N,H,W]) with the estimator -> decoder path; same shape out.
    ``ensemble``: decoder outputs averaged over that many mirrored copies (model.mirror)."""
    peak = (1 << bit_depth) - 1
    device = next(model.parameters()).device
    y = to_tensor(planes, peak, device)
    z = model.estimate(y, seed=seed)
    out = mirror_average(lambda t: model.decoder(t, z), y, ensemble)
    return to_planes(out, peak, planes.dtype).reshape(planes.shape)
