"""PyTorch runner: fp16 channels-last on CUDA, replayed as CUDA graphs (optionally torch.compile'd); on the
CPU fp32, or with its convolutions in bfloat16 (``Backend.TORCH(bf16=True)``); straight from the checkpoint."""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..model.diffqe import DiffQE
from ..model.inference import scale_correction
from ..model.mirror import mirror_average
from .backends import Backend

MAX_GRAPHS = 8  # captured shapes kept (each holds its activations); tiles of a frame need a few


@dataclass
class Staging:
    """Pinned host buffers for one frame in flight on the GPU: its plane, its output and Z.  Copies from pinned
    memory run asynchronously, so a frame's transfers queue behind the previous frame's work, and the
    buffers stay this frame's until its ``done`` event has passed."""

    plane: torch.Tensor
    out: torch.Tensor
    z: torch.Tensor
    done: torch.cuda.Event

    @classmethod
    def like(cls, plane: np.ndarray, z_dim: int) -> Staging:
        def pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, pin_memory=True)

        codes = torch.from_numpy(np.empty(0, plane.dtype)).dtype
        # blocking: a waiting frame thread sleeps instead of spinning on a core the temporal stage needs
        return cls(pinned(plane.shape, codes), pinned(plane.shape, codes), pinned((1, z_dim), torch.float32),
                   torch.cuda.Event(blocking=True))


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
        self.bf16 = spec.bf16 and self.device.type == "cpu"
        self.model = model.to(self.device, self.dtype).to(memory_format=torch.channels_last).eval()
        if spec.compile:
            if self.device.type == "cpu":  # its C++ build warns that no CUDA is found, which a CPU job never needs
                logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            # dynamic=False: one specialised graph per frame size, which a video keeps for its length.
            self.model.estimator = torch.compile(self.model.estimator, mode=spec.compile, dynamic=False)
            self.model.decoder = torch.compile(self.model.decoder, mode=spec.compile, dynamic=False)
        self.use_graphs = spec.cuda_graphs and self.device.type == "cuda"
        self.graphs: OrderedDict[tuple, CudaGraph] = OrderedDict()
        self.name = f"torch-{self.device.type}" + ("-bf16" if self.bf16 else "")
        self.z_dim, self.uses_z, self.min_side = model.cfg.z_dim, model.uses_z, model.cfg.min_side
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = spec.cudnn_benchmark  # process-wide: PyTorch has no other switch
        # enhance_frame: one frame at a time is queued on the GPU (the graphs' static buffers are shared) or, on
        # the CPU, computed; on the GPU the waits for results and the host copies run outside the lock.
        self.lock = threading.Lock()
        self.staging: dict[tuple, list[Staging]] = {}
        self.noise: dict[bytes, torch.Tensor] = {}
        self.scales: dict[float, torch.Tensor] = {}

    def _in(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def _estimate(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            return self.model.estimator(y.to(self.dtype), noise.to(self.dtype)).float()

    def _decode(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = y.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            return self.model.decoder(x, None if z is None else z.to(self.dtype)).float()

    def _frame(self, plane: torch.Tensor, noise: torch.Tensor, peak: float, ensemble: int,
               strength: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
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

    def _noise(self, noise: np.ndarray) -> torch.Tensor:
        """The estimator's starting noise on the device: a filter's seed fixes it, so it crosses the bus once."""
        key = noise.tobytes()
        if key not in self.noise:
            self.noise[key] = self._in(noise)
        return self.noise[key]

    def _scale(self, strength: float) -> torch.Tensor:
        """STRENGTH on the device, each value crossing the bus once (the guard gives a few per video)."""
        if strength not in self.scales:
            self.scales[strength] = torch.tensor(strength, dtype=torch.float32, device=self.device)
        return self.scales[strength]

    def _whole_frame(self, x: torch.Tensor, noise: np.ndarray, peak: float, ensemble: int,
                     strength: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        if strength == 1:  # the model's output as it is, bit for bit
            return self._run(("frame", peak, ensemble), lambda a, n: self._frame(a, n, peak, ensemble, 1.0),
                             x, self._noise(noise))
        # Any other strength is the graph's input, not a constant in it: the source-QP guard sets one per frame.
        return self._run(("frame", peak, ensemble, "scaled"), lambda a, n, s: self._frame(a, n, peak, ensemble, s),
                         x, self._noise(noise), self._scale(strength))

    @torch.inference_mode()
    def enhance_frame(self, plane: np.ndarray, peak: float, noise: np.ndarray, ensemble: int = 1,
                      strength: float = 1.0, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """A whole frame as VapourSynth holds it (a uint8, uint16 or float32 [H,W] plane) -> (the enhanced plane
        in the same type, written into ``out`` where given; Z or None), averaged over ``ensemble`` mirrored copies
        (model.mirror), the correction scaled by ``strength`` (model.inference.scale_correction).  Scaling,
        rounding and clipping run on the GPU, inside the graph: only the plane's own bytes cross the bus.

        Safe to call from several threads.  On the GPU a call holds the lock only to queue its frame (upload,
        graph, download, all asynchronous through pinned buffers) and waits for the result outside it: while one
        frame computes, the next is queued and finished ones are copied out, so the GPU does not wait for the
        Python around each frame (docs/performance.md, "Frames queued from every thread")."""
        codes = plane.view(np.int16) if plane.dtype == np.uint16 else plane
        result = np.empty_like(plane) if out is None else out
        if self.device.type != "cuda":
            with self.lock, warnings.catch_warnings():  # VapourSynth's planes are read-only; the tensor is only read
                warnings.simplefilter("ignore", UserWarning)
                y, z = self._whole_frame(torch.from_numpy(codes), noise, peak, ensemble, strength)
                np.copyto(result.view(codes.dtype), y.numpy())
            return result, None if z is None else z.numpy()
        key = (codes.shape, codes.dtype.str)
        with self.lock:
            free = self.staging.setdefault(key, [])
            stage = free.pop() if free else None
        stage = stage or Staging.like(codes, self.z_dim)
        np.copyto(stage.plane.numpy(), codes)  # pageable -> pinned, side by side with other frames
        with self.lock:
            y, z = self._whole_frame(stage.plane.to(self.device, non_blocking=True), noise, peak, ensemble, strength)
            stage.out.copy_(y, non_blocking=True)
            if z is not None:
                stage.z.copy_(z, non_blocking=True)
            stage.done.record()
        stage.done.synchronize()  # releases the GIL
        np.copyto(result.view(codes.dtype), stage.out.numpy())
        z_host = None if z is None else stage.z.numpy().copy()
        with self.lock:  # only now: a failed frame's buffers, maybe still in a copy, are not reused
            free.append(stage)
        return result, z_host
