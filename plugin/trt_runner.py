"""TensorRT runner: engines from diffqe.export.trt_build, executed with execute_async_v3 on a CUDA stream.

PyTorch owns the device buffers and the stream, so no other CUDA binding is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..export.cache import onnx_graphs
from ..export.trt_build import BuildOptions, Profile, TrtUnavailable, build_engine, import_tensorrt
from ..model.diffqe import DiffQE
from .backends import Backend, BackendUnavailable


class _Engine:
    def __init__(self, trt, path: Path, device: int) -> None:
        import torch

        self.torch, self.device = torch, torch.device("cuda", device)
        with torch.cuda.device(self.device):  # TensorRT loads onto, and runs on, the current CUDA device
            self.logger = trt.Logger(trt.Logger.WARNING)
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not load {path}; delete it and run scripts/export_trt.py to "
                                   "rebuild")
            self.context = self.engine.create_execution_context()
            if self.context is None:  # it allocates the activations for the profile's largest shape up front
                raise RuntimeError(f"TensorRT could not create an execution context for {path} (out of GPU memory "
                                   "for its activations?); build engines for smaller frames (--max-shape) or free GPU "
                                   "memory")
            self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch.float16 if self.engine.get_tensor_dtype(n) == trt.DataType.HALF else torch.float32
                       for n in names}

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            keep = []
            for name in self.inputs:
                t = torch.from_numpy(feeds[name]).to(self.device, self.dtypes[name], non_blocking=True).contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                    raise RuntimeError(f"{name} of shape {tuple(t.shape)} is outside what this TensorRT engine was "
                                       f"built for ({tuple(low)} to {tuple(high)}): rebuild it with "
                                       "scripts/export_trt.py --min-shape/--max-shape HxW, or decode in tiles "
                                       "(--tile) within that range")
                self.context.set_tensor_address(name, t.data_ptr())
            (name,) = self.outputs
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), device=self.device, dtype=self.dtypes[name])
            self.context.set_tensor_address(name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed; see the messages above")
            result = out.float().cpu().numpy()  # synchronizes with the stream
        return result


class TrtRunner:
    def __init__(self, model: DiffQE, meta: dict, spec: Backend.TRT, engine_dir: Path) -> None:
        try:
            trt = import_tensorrt()
        except TrtUnavailable as e:
            raise BackendUnavailable(str(e)) from None
        import torch

        if not 0 <= spec.device_id < torch.cuda.device_count():
            raise BackendUnavailable(f"Backend.TRT(device_id={spec.device_id}): this machine has "
                                     f"{torch.cuda.device_count()} CUDA GPU(s); choose a device_id below that")
        profile = Profile.of(spec.min_shape, spec.opt_shape, spec.max_shape, static=spec.static)
        options = BuildOptions("fp16" if spec.fp16 else "fp32", spec.workspace_gib, spec.builder_optimization_level)
        graphs = onnx_graphs(model, meta, engine_dir, fp16=spec.fp16)
        self.name, self.z_dim, self.uses_z = "trt", model.cfg.z_dim, model.uses_z
        # The filter refuses smaller frames and cuts no smaller tiles (a static engine takes its one shape only).
        self.min_side = max(model.cfg.min_side, *(() if spec.static else spec.min_shape))
        self.device = f"cuda:{spec.device_id}"
        with torch.cuda.device(spec.device_id):  # engines are built for, and named after, the GPU they run on
            self._decoder = _Engine(trt, build_engine(graphs.decoder, engine_dir, profile, options), spec.device_id)
            self._estimator = (_Engine(trt, build_engine(graphs.estimator, engine_dir, profile, options),
                                       spec.device_id) if graphs.estimator else None)
        print(f"TensorRT engines ready in {engine_dir / 'trt'}", file=sys.stderr)

    def estimate(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._estimator(y=y, noise=noise.astype(np.float32))

    def decode(self, y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        return self._decoder(y=y) if z is None else self._decoder(y=y, z=z)
