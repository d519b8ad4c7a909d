"""PyTorch runner: fp16 channels-last on CUDA (optionally torch.compile'd), fp32 on the CPU, straight from the
checkpoint."""

from __future__ import annotations

import numpy as np
import torch

from ..model.diffqe import DiffQE
from .backends import Backend


class TorchRunner:
    def __init__(self, model: DiffQE, spec: Backend.TORCH) -> None:
        self.device = torch.device(spec.device)
        self.dtype = torch.float16 if spec.fp16 and self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, self.dtype).to(memory_format=torch.channels_last).eval()
        if spec.compile:
            # dynamic=False: one specialised graph per frame size, which a video keeps for its length.
            self.model.estimator = torch.compile(self.model.estimator, mode=spec.compile, dynamic=False)
            self.model.decoder = torch.compile(self.model.decoder, mode=spec.compile, dynamic=False)
        self.name = f"torch-{self.device.type}"
        self.z_dim, self.uses_z, self.min_side = model.cfg.z_dim, model.uses_z, model.cfg.min_side

    def _in(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, self.dtype, non_blocking=True)

    @torch.inference_mode()
    def estimate(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.model.estimator(self._in(y), self._in(noise)).float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        x = self._in(y).contiguous(memory_format=torch.channels_last)
        return self.model.decoder(x, None if z is None else self._in(z)).float().cpu().numpy()
