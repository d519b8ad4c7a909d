"""Checkpoints: weights as safetensors plus the model config as JSON, side by side.

``NAME.safetensors`` holds the tensors and ``NAME.json`` the config and training metadata.  Optimizer
state for resuming lives in the same pair of files under the ``optim/`` prefix (tensors) and the
``optim`` key (everything else), so a checkpoint is always two plain, inspectable files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig
from .diffqe import DiffQE
from .files import SHIPPED, atomic_write, paths


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit this code; the message says which file and why."""


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors inside nested dicts/lists by {"tensor": key}; collect them in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"tensor": prefix}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{prefix}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"tensor"}:
            return tensors[obj["tensor"]]
        return {(int(k) if k.isdigit() else k): _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save(stem: Path, model: DiffQE, meta: dict | None = None, optimizer: dict | None = None, *,
         inference_only: bool = False, dtype: torch.dtype | None = None) -> None:
    """Write STEM.safetensors and STEM.json, each under a temporary name first, then renamed.

    ``inference_only`` leaves out the training-only encoder; ``dtype`` stores the weights in another
    precision (fp16 halves the shipped file; loading converts back to the model's dtype).
    """
    weights, config = paths(stem)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model/{k}": v.detach().cpu().to(dtype or v.dtype).contiguous()
        for k, v in model.state_dict().items()
        if not (inference_only and k.startswith("encoder."))
    }
    doc: dict[str, Any] = {"model": json.loads(model.cfg.to_json()), "meta": meta or {}}
    if optimizer is not None:
        doc["optim"] = _split_tensors(optimizer, "optim", tensors)
    atomic_write(weights, lambda p: save_file(tensors, str(p)))
    atomic_write(config, lambda p: p.write_text(json.dumps(doc, indent=2)))


def load(stem: Path | None = None, *, with_optimizer: bool = False):
    """Load a checkpoint (default: the shipped weights) -> (model in eval mode, meta[, optimizer state])."""
    weights, config = paths(stem or SHIPPED)
    for p in (weights, config):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {p} is missing; pass the stem of a NAME.safetensors + NAME.json pair")
    try:
        doc = json.loads(config.read_text())
        tensors = load_file(str(weights))
        cfg = ModelConfig.from_dict(doc["model"])
    except (ValueError, KeyError, OSError, SafetensorError) as e:
        raise CheckpointError(f"checkpoint {weights.with_suffix('')} is unreadable: {e}") from None
    model = DiffQE(cfg)
    state = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("encoder.")]  # the encoder is training-only
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {weights} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    model.eval()
    if with_optimizer:
        return model, doc.get("meta", {}), _join_tensors(doc.get("optim"), tensors)
    return model, doc.get("meta", {})
