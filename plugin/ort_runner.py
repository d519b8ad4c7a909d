"""ONNX Runtime runner: CPU, CUDA or TensorRT execution provider over the exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..export.cache import onnx_graphs
from ..model.diffqe import DiffQE
from .backends import Backend, BackendUnavailable


def _providers(spec, engine_dir: Path) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if isinstance(spec, Backend.ORT_CPU):
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": spec.device_id})
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailable(
            "ONNX Runtime here has no CUDA execution provider; on an NVIDIA machine install "
            "'pip install diffqe[nvidia]' (onnxruntime-gpu) instead of onnxruntime, or use backend='ort-cpu'")
    if isinstance(spec, Backend.ORT_TRT):
        if "TensorrtExecutionProvider" not in available:
            raise BackendUnavailable("ONNX Runtime here has no TensorRT execution provider; install "
                                     "'pip install diffqe[nvidia]' on an NVIDIA machine, or use backend='ort-cuda'")
        cache = engine_dir / "ort-trt"
        cache.mkdir(parents=True, exist_ok=True)
        trt = ("TensorrtExecutionProvider", {"device_id": spec.device_id, "trt_fp16_enable": spec.fp16,
                                             "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                             "trt_timing_cache_enable": True})
        return [trt, cuda, "CPUExecutionProvider"]
    return [cuda, "CPUExecutionProvider"]


class OrtRunner:
    def __init__(self, model: DiffQE, meta: dict, spec, engine_dir: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("ONNX Runtime is not installed: 'pip install diffqe[cpu]' "
                                     "(or diffqe[nvidia] on an NVIDIA machine)") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings and below stay quiet: stdout may carry video
        # Idle pool threads sleep instead of spinning: spinning took cores from VapourSynth's own threads
        # (vspipe kept 86-93 % of the bare CPU throughput with it, 96-100 % without; bench_vspipe.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if isinstance(spec, Backend.ORT_CPU) and spec.num_threads:
            options.intra_op_num_threads = spec.num_threads
        providers = _providers(spec, engine_dir)  # before exporting: an unusable choice fails at once
        graphs = onnx_graphs(model, meta, engine_dir, fp16=spec.fp16)
        self.name = type(spec).__name__.lower().replace("_", "-")  # as users name it: "ort-cpu"
        self.device = "cpu" if isinstance(spec, Backend.ORT_CPU) else f"cuda:{spec.device_id}"
        self.z_dim, self.uses_z, self.min_side = model.cfg.z_dim, model.uses_z, model.cfg.min_side
        self._decoder = ort.InferenceSession(str(graphs.decoder), options, providers=providers)
        self._estimator = (ort.InferenceSession(str(graphs.estimator), options, providers=providers)
                           if graphs.estimator else None)

    def estimate(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._estimator.run(["z"], {"y": y, "noise": noise.astype(np.float32)})[0]

    def decode(self, y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        feeds = {"y": y} if z is None else {"y": y, "z": z}
        return self._decoder.run(["y_out"], feeds)[0]
