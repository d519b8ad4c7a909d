"""Where exported graphs and built engines live, keyed by what they were made from."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..model.diffqe import DiffQE
from .onnx_export import OnnxGraphs, export_onnx, model_hash

REPO_ENGINES = Path(__file__).resolve().parent.parent / "engines"


def default_engine_dir() -> Path:
    """$DIFFQE_ENGINE_DIR, else the repository's engines/ (writable checkouts), else ~/.cache/diffqe/engines."""
    if env := os.environ.get("DIFFQE_ENGINE_DIR"):
        return Path(env)
    if REPO_ENGINES.is_dir() and os.access(REPO_ENGINES, os.W_OK):
        return REPO_ENGINES
    return Path.home() / ".cache" / "diffqe" / "engines"


def onnx_graphs(model: DiffQE, meta: dict, engine_dir: Path, *, fp16: bool = False) -> OnnxGraphs:
    """The model's ONNX graphs under ENGINE_DIR/<model hash>/, exported on first use."""
    folder = engine_dir / model_hash(model)[:16]
    suffix = "_fp16" if fp16 else ""
    decoder = folder / f"decoder{suffix}.onnx"
    estimator = folder / f"estimator{suffix}.onnx" if model.uses_z else None
    if decoder.exists() and (estimator is None or estimator.exists()):
        return OnnxGraphs(estimator, decoder)
    print(f"exporting ONNX graphs to {folder}", file=sys.stderr)
    return export_onnx(model, folder, meta=meta, fp16=fp16)
