"""Checkpoint files without the networks: where the shipped weights lie, which two files a checkpoint is, the
installed version, and writing a file whole.  Free of PyTorch, so that ``diffqe`` parses its command line and
checks a job without importing it (2.8 s per process on 2 cores; a batch job starts one per file)."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).parent / "weights"
SHIPPED = WEIGHTS / "diffqe"  # the model (model.checkpoint)
SHIPPED_FUSION = WEIGHTS / "fusion"  # the temporal fusion (model.fusion)


def package_version() -> str:
    """The installed distribution's version ("0+source" in a checkout on PYTHONPATH, not installed)."""
    try:
        return metadata.version("diffqe")
    except metadata.PackageNotFoundError:
        return "0+source"


def paths(stem: Path) -> tuple[Path, Path]:
    """(weights, config) of the checkpoint STEM (which may also name either file)."""
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def atomic_write(path: Path, write) -> None:
    """write(tmp) under PATH.tmp, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def atomic_savez(path: Path, **arrays) -> None:
    """np.savez of ARRAYS to PATH through ``atomic_write``: an interrupted run leaves no truncated archive."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file, not a name: np.savez would add ".npz" to the temporary name
            np.savez(f, **arrays)
    atomic_write(path, write)
