"""Inference backends behind one narrow interface, chosen in one place (``create``).

Each backend is a small frozen dataclass of its settings, as in vs-mlrt::

    runner = create(Backend.ORT_CPU())           # or Backend.TRT(fp16=True), "torch", None (= best available)
    z = runner.estimate(y, noise)                # y float32 [N,1,H,W] in [0,1], noise [N,D] -> z [N,D]
    out = runner.decode(y, z)                    # -> enhanced y [N,1,H,W]
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what to install on which machine."""


class Runner(Protocol):
    name: str
    device: torch.device | str  # where it computes ("cpu", "cuda:0"): the temporal fusion runs there too
    z_dim: int
    uses_z: bool
    min_side: int

    def estimate(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray: ...

    def decode(self, y: np.ndarray, z: np.ndarray | None) -> np.ndarray: ...


class Backend:
    """Backend settings.  ``fp16`` selects the fp16 graph/engine (fp32 in and out)."""

    @dataclass(frozen=True)
    class ORT_CPU:
        num_threads: int = 0  # 0: ONNX Runtime's default
        fp16: bool = False

    @dataclass(frozen=True)
    class ORT_CUDA:
        device_id: int = 0
        fp16: bool = True

    @dataclass(frozen=True)
    class ORT_TRT:
        """ONNX Runtime's TensorRT execution provider (engines cached under the engine folder)."""

        device_id: int = 0
        fp16: bool = True

    @dataclass(frozen=True)
    class TORCH:
        device: str = "cuda"
        fp16: bool = True  # on CUDA only
        # On the CPU: convolutions in bfloat16 (autocast: sums and the output stay fp32), on CPUs that compute it
        # natively (AMX, AVX512-BF16); else fp32.  docs/performance.md measures its speed and its cost in dB.
        bf16: bool = False
        # torch.compile mode ("default", or "max-autotune-no-cudagraphs": modes that capture graphs themselves
        # clash with cuda_graphs); "" = eager.  Each new frame size compiles once (15-20 s on an H100 in the
        # default mode; autotuning modes take many minutes), so it pays off on long clips.
        compile: str = ""
        cuda_graphs: bool = True  # capture each frame size once and replay it (CUDA only)
        # cuDNN times its convolution algorithms once per shape and keeps the fastest (docs/performance.md):
        # the same within a process, but another process may pick another and differ by a code value at rare
        # pixels.  False: cuDNN's heuristic choice, the same in every run, slower.
        cudnn_benchmark: bool = True

    @dataclass(frozen=True)
    class TRT:
        """Engines built with the TensorRT Python API (see diffqe.export.trt_build)."""

        device_id: int = 0
        fp16: bool = True
        min_shape: tuple[int, int] = (64, 64)
        opt_shape: tuple[int, int] = (1080, 1920)
        max_shape: tuple[int, int] = (2160, 3840)
        workspace_gib: float = 4.0
        builder_optimization_level: int = 3
        static: bool = False


BackendSpec = Backend.ORT_CPU | Backend.ORT_CUDA | Backend.ORT_TRT | Backend.TORCH | Backend.TRT

NAMES: dict[str, BackendSpec] = {
    "trt": Backend.TRT(),
    "ort-trt": Backend.ORT_TRT(),
    "ort-cuda": Backend.ORT_CUDA(),
    "torch": Backend.TORCH(),
    "torch-compile": Backend.TORCH(compile="default"),
    "torch-cpu": Backend.TORCH(device="cpu", fp16=False),
    "torch-cpu-bf16": Backend.TORCH(device="cpu", fp16=False, bf16=True),
    # 1.3x torch-cpu-bf16's speed once compiled: a minute or two per new frame size on first use, seconds after
    # (PyTorch caches the kernels), so for long videos (docs/performance.md)
    "torch-cpu-bf16-compile": Backend.TORCH(device="cpu", fp16=False, bf16=True, compile="default"),
    "ort-cpu": Backend.ORT_CPU(),
}


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16), which PyTorch's oneDNN kernels use;
    elsewhere bf16 is emulated and slower than fp32.  (PyTorch's probes are private: False where they are gone.)"""
    import torch

    return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported",
                                                                         "_is_avx512_bf16_supported"))


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile builds its CPU kernels with ($CXX, else g++, as PyTorch's Inductor picks it);
    None where there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def best_available() -> BackendSpec:
    """TensorRT where it and a GPU are there, then ONNX Runtime CUDA, PyTorch CUDA; on the CPU, PyTorch in
    bfloat16 where the CPU computes it natively (twice ONNX Runtime's speed there: docs/performance.md), then
    ONNX Runtime, then PyTorch in fp32."""
    cuda = _torch_cuda()
    if cuda and importlib.util.find_spec("tensorrt"):
        return Backend.TRT()
    if "CUDAExecutionProvider" in _ort_providers():
        return Backend.ORT_CUDA()
    if cuda:
        return Backend.TORCH()
    if native_bf16():
        return NAMES["torch-cpu-bf16"]
    if "CPUExecutionProvider" in _ort_providers():
        return Backend.ORT_CPU()
    return NAMES["torch-cpu"]


def best_name() -> str:
    """The name of ``best_available()``: each choice it makes is one of NAMES."""
    best = best_available()
    return next(name for name, spec in NAMES.items() if spec == best)


def resolve(backend: BackendSpec | str | None) -> BackendSpec:
    if backend is None:
        return best_available()
    if isinstance(backend, str):
        if backend not in NAMES:
            raise BackendUnavailable(f"unknown backend {backend!r}; choose one of {', '.join(NAMES)}")
        return NAMES[backend]
    return backend


def create(backend: BackendSpec | str | None = None, *, checkpoint: Path | None = None,
           engine_dir: Path | None = None) -> Runner:
    """The one place that turns a backend choice into a runner for a checkpoint (default: shipped weights)."""
    from ..export.cache import default_engine_dir  # here, as the runners: choosing a backend loads no PyTorch
    from ..model import checkpoint as checkpoints

    spec = resolve(backend)
    model, meta = checkpoints.load(checkpoint)
    engine_dir = engine_dir or default_engine_dir()
    if isinstance(spec, Backend.TORCH):
        from .torch_runner import TorchRunner

        if spec.device.startswith("cuda") and not _torch_cuda():
            raise BackendUnavailable("backend 'torch' on CUDA needs an NVIDIA GPU with a CUDA build of PyTorch; "
                                     "use backend='ort-cpu' or 'torch-cpu' on this machine")
        if spec.device == "cpu" and spec.bf16 and not native_bf16():
            raise BackendUnavailable("backend 'torch-cpu-bf16' needs a CPU with native bfloat16 (Intel AMX or "
                                     "AVX512-BF16), which this one lacks; use backend='ort-cpu' or 'torch-cpu'")
        if spec.device == "cpu" and spec.compile and not cpp_compiler():
            raise BackendUnavailable("torch.compile on the CPU builds its kernels with a C++ compiler, and this "
                                     "machine has none (apt-get install g++, or name one in $CXX); or use "
                                     "backend='torch-cpu-bf16'")
        return TorchRunner(model, spec)
    if isinstance(spec, Backend.TRT):
        from .trt_runner import TrtRunner

        return TrtRunner(model, meta, spec, engine_dir)
    from .ort_runner import OrtRunner

    return OrtRunner(model, meta, spec, engine_dir)
