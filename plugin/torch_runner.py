"""PyTorch runner: fp16 channels-last on CUDA, replayed as CUDA graphs (optionally torch.compile'd), fp32 on
the CPU, straight from the checkpoint."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from ..model.diffqe import DiffQE
from ..model.inference import scale_correction
from ..model.mirror import mirror_average
from .backends import Backend

MAX_GRAPHS = 8  # captured shapes kept (each holds its activations); tiles of a frame need a few


class CudaGraph:
    """``fn`` on fixed input shapes captured once, then replayed: one launch per call instead of hundreds of
    Python-dispatched kernels.  Besides the launch overhead, that frees the GIL that VapourSynth's other
    frame threads need while this one runs the model.  Inputs are copied into static buffers; the returned
    tensor is the graph's static output, overwritten by the next replay."""

    def __init__(self, fn: Callable[..., torch.Tensor], *example: torch.Tensor) -> None:
        self.inputs = [e.clone() for e in example]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN's algorithm choice, compile, allocator
            for _ in range(2):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for buffer, a in zip(self.inputs, args):
            buffer.copy_(a, non_blocking=True)
        self.graph.replay()
        return self.output


class TorchRunner:
    def __init__(self, model: DiffQE, spec: Backend.TORCH) -> None:
        self.device = torch.device(spec.device)
        self.dtype = torch.float16 if spec.fp16 and self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, self.dtype).to(memory_format=torch.channels_last).eval()
        if spec.compile:
            # dynamic=False: one specialised graph per frame size, which a video keeps for its length.
            self.model.estimator = torch.compile(self.model.estimator, mode=spec.compile, dynamic=False)
            self.model.decoder = torch.compile(self.model.decoder, mode=spec.compile, dynamic=False)
        self.use_graphs = spec.cuda_graphs and self.device.type == "cuda"
        self.graphs: OrderedDict[tuple, CudaGraph] = OrderedDict()
        self.name = f"torch-{self.device.type}"
        self.z_dim, self.uses_z, self.min_side = model.cfg.z_dim, model.uses_z, model.cfg.min_side

    def _in(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def _estimate(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.model.estimator(y.to(self.dtype), noise.to(self.dtype)).float()

    def _decode(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = y.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model.decoder(x, None if z is None else z.to(self.dtype)).float()

    def _frame(self, plane: torch.Tensor, noise: torch.Tensor, peak: float, ensemble: int,
               strength: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        codes = plane.dtype
        if codes == torch.int16:  # uint16 codes travel as int16 (torch's uint16 lacks CUDA kernels)
            plane = plane.to(torch.int32) & 0xFFFF
        y = (plane.float() / peak)[None, None]
        z = self._estimate(y, noise) if self.uses_z else None
        out = scale_correction(y, mirror_average(lambda t: self._decode(t, z), y, ensemble), strength)[0, 0]
        if codes.is_floating_point:
            return out, z
        out = (out * peak).round().clamp(0, peak)
        return (out.to(torch.int32).to(torch.int16) if codes == torch.int16 else out.to(codes)), z

    def _run(self, key: tuple, fn: Callable, *args: torch.Tensor):
        if not self.use_graphs:
            return fn(*args)
        key = (*key, *(a.shape for a in args))
        if key not in self.graphs:
            if len(self.graphs) == MAX_GRAPHS:
                self.graphs.popitem(last=False)
            self.graphs[key] = CudaGraph(fn, *args)
        self.graphs.move_to_end(key)
        return self.graphs[key](*args)

    @torch.inference_mode()
    def estimate(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._run(("estimate",), self._estimate, self._in(y), self._in(noise)).cpu().numpy()

    @torch.inference_mode()
    def decode(self, y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        zs = () if z is None else (self._in(z),)
        return self._run(("decode",), self._decode, self._in(y), *zs).cpu().numpy()

    @torch.inference_mode()
    def enhance_frame(self, plane: np.ndarray, peak: float, noise: np.ndarray, ensemble: int = 1,
                      strength: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole frame as VapourSynth holds it (a uint8, uint16 or float32 [H,W] plane) -> (the enhanced plane
        in the same type, Z or None), averaged over ``ensemble`` mirrored copies (model.mirror), the correction
        scaled by ``strength`` (model.inference.scale_correction).  Scaling, rounding and clipping run on the GPU,
        inside the graph: only the plane's own bytes cross the bus, and the frame callback, which VapourSynth's
        Python filters run one at a time, does little else."""
        codes = plane.view(np.int16) if plane.dtype == np.uint16 else plane
        with warnings.catch_warnings():  # VapourSynth's planes are read-only; the tensor is only read
            warnings.simplefilter("ignore", UserWarning)
            x = self._in(codes)
        out, z = self._run(("frame", peak, ensemble, strength),
                           lambda a, n: self._frame(a, n, peak, ensemble, strength), x, self._in(noise))
        return out.cpu().numpy().view(plane.dtype), None if z is None else z.cpu().numpy()
