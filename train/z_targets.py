"""Z targets by QP: the encoder's part for weights that no longer carry an encoder.

Stage 2 teaches the estimator to reproduce the encoder's Z, which saw the reference and the QP map.  The
shipped weights carry no encoder, and their estimator returns one Z for every input (docs/results.md).  A
table of one Z per QP, each fitted through the frozen decoder on training pairs coded at that QP, is an
encoder that knows the QP and nothing else; stage 2 against it teaches the estimator to tell the QP from the
pixels (docs/training.md, step 13; step 11 measured what that is worth to the shipped decoder).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..model.diffqe import DiffQE
from ..model.files import atomic_write
from .metrics import patch_dpsnr
from .pairs import Pair, PatchSampler

CropSampler = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # -> (reference, decoded), [N,1,H,W] in [0, 1]


def fit_z(decoder: torch.nn.Module, sample: CropSampler, z0: torch.Tensor, steps: int, *, lr: float = 0.02,
          decay: bool = False) -> torch.Tensor:
    """One Z for all the crops SAMPLE returns, through the frozen DECODER: Adam on the refinements' loss
    (minus the mean per-crop dPSNR) from Z0 [1, D].  DECAY anneals the learning rate to zero (cosine), so
    that the result is not one of Adam's full-size steps on the last batch."""
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for step in range(steps):
        if decay:
            opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        gt, y = sample()
        loss = -patch_dpsnr(decoder(y, z.expand(len(y), -1)), gt, y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return z.detach()


@dataclass(frozen=True)
class ZTable:
    """One Z per QP; called with a batch of QPs [N] it returns their Zs [N, D]."""

    qps: tuple[int, ...]
    z: torch.Tensor  # [len(qps), D]

    def __call__(self, qp: torch.Tensor) -> torch.Tensor:
        index = {q: i for i, q in enumerate(self.qps)}
        rows = [index[q] for q in qp.tolist()]  # missing QPs are refused up front, by covers()
        return self.z.to(qp.device)[torch.tensor(rows, device=qp.device)]

    def covers(self, pairs: list[Pair], source: Path) -> None:
        missing = sorted({p.qp for p in pairs} - set(self.qps))
        if missing:
            raise ValueError(f"{source} has Zs for QPs {list(self.qps)}, not for the pairs' QPs {missing}; fit it "
                             f"on these pairs with scripts/fit_z_table.py")

    def save(self, path: Path) -> None:
        meta = {"qps": ",".join(map(str, self.qps))}
        atomic_write(Path(path), lambda p: save_file({"z": self.z.contiguous()}, str(p), metadata=meta))

    @classmethod
    def load(cls, path: Path) -> ZTable:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Z table {path} is missing; write it with scripts/fit_z_table.py")
        try:
            with safe_open(str(path), framework="pt") as f:
                qps = tuple(int(q) for q in f.metadata()["qps"].split(","))
                z = f.get_tensor("z")
        except (ValueError, KeyError, TypeError, OSError, SafetensorError) as e:
            raise ValueError(f"Z table {path} is unreadable ({e}); write it again with scripts/fit_z_table.py") from None
        return cls(qps, z)


def fit_table(model: DiffQE, pairs: list[Pair], *, steps: int, patch: int = 96, batch: int = 8,
              seed: int = 0) -> ZTable:
    """A Z per QP of PAIRS, each fitted (fit_z, annealed) on crops of the pairs coded at that QP, through
    MODEL's frozen decoder, from the mean of the Zs its estimator gives 16 random crops of PAIRS (for the
    shipped weights: their one constant Z)."""
    model.requires_grad_(False)
    qps = sorted({p.qp for p in pairs})
    with torch.no_grad():
        y0 = torch.from_numpy(PatchSampler(pairs, patch, 16, seed).sample()[0])
        z0 = model.estimate(y0).mean(0, keepdim=True)
    rows = []
    for q in qps:
        sampler = PatchSampler([p for p in pairs if p.qp == q], patch, batch, seed + q)

        def sample() -> tuple[torch.Tensor, torch.Tensor]:
            y, gt, _ = sampler.sample()
            return torch.from_numpy(gt), torch.from_numpy(y)

        rows.append(fit_z(model.decoder, sample, z0, steps, decay=True))
        print(f"QP {q}: |Z - Z0| {float((rows[-1] - z0).norm()):.4f}", file=sys.stderr)
    return ZTable(tuple(qps), torch.cat(rows))
