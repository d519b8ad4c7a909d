"""Shared fixtures: real frames from the bundled sample's lossless reference (a real photograph)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffqe.model.config import ModelConfig
from diffqe.train.codec import read_video_luma

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_frames() -> list[np.ndarray]:
    return read_video_luma(SAMPLES / "reference.mkv")


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(z_dim=16, decoder_channels=(8, 16, 32), encoder_channels=(16, 32),
                       condition_channels=(8, 16), denoiser_hidden=32, cbam_reduction=4)


def run_script(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run scripts/NAME with this interpreter, as a user would."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
