"""ONNX export: two graphs, because the estimator needs the whole frame (global pooling) while the decoder
may run on tiles.

- ``estimator.onnx``: y [N,1,H,W], noise [N,D] -> z [N,D], the T reverse steps unrolled (deterministic);
- ``decoder.onnx``: y [N,1,H,W], z [N,D] -> enhanced y [N,1,H,W] (no z input for the NoEst variant).

N, H and W are dynamic.  The fp16 variants compute in fp16 and keep fp32 inputs/outputs unless asked for
fp16 IO, as TensorRT's strongly typed networks take their precision from the graph.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from ..model.diffqe import DiffQE
from ..model.files import atomic_write, package_version

OPSET = 17


class _EstimatorGraph(nn.Module):
    def __init__(self, model: DiffQE, dtype: torch.dtype, io_dtype: torch.dtype) -> None:
        super().__init__()
        self.estimator, self.dtype, self.io_dtype = model.estimator, dtype, io_dtype

    def forward(self, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.estimator(y.to(self.dtype), noise.to(self.dtype)).to(self.io_dtype)


class _DecoderGraph(nn.Module):
    def __init__(self, model: DiffQE, dtype: torch.dtype, io_dtype: torch.dtype) -> None:
        super().__init__()
        self.decoder, self.dtype, self.io_dtype = model.decoder, dtype, io_dtype

    def forward(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(y.to(self.dtype), None if z is None else z.to(self.dtype)).to(self.io_dtype)


@dataclass(frozen=True)
class OnnxGraphs:
    estimator: Path | None  # None for the NoEst variant
    decoder: Path


def model_hash(model: DiffQE) -> str:
    """sha256 over the inference weights (names and fp32 bytes): identifies the model an engine came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith("encoder."):
            h.update(name.encode())
            h.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _metadata(model: DiffQE, meta: dict, precision: str) -> dict[str, str]:
    qps = meta.get("qps") or []
    return {
        "diffqe_version": package_version(),
        "model_hash": model_hash(model),
        "variant": model.cfg.variant,
        "diffusion_steps": str(model.cfg.diffusion_steps),
        "z_dim": str(model.cfg.z_dim),
        "pad_multiple": str(model.cfg.pad_multiple),
        "min_side": str(model.cfg.min_side),
        "training_qp_range": f"{min(qps)}-{max(qps)}" if qps else "unknown",
        "precision": precision,
    }


def _export(module: nn.Module, args: tuple, names: list[str], output: str, path: Path, metadata: dict) -> None:
    spatial = {0: "N", 2: "H", 3: "W"}
    axes = {n: spatial if n == "y" else {0: "N"} for n in names} | {output: spatial if output == "y_out" else {0: "N"}}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer warns about shape arithmetic that exports correctly
            torch.onnx.export(module, args, str(tmp), input_names=names, output_names=[output],
                              opset_version=OPSET, dynamic_axes=axes, dynamo=False, do_constant_folding=True)
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))

    atomic_write(path, write)


def export_onnx(model: DiffQE, out_dir: Path, *, meta: dict | None = None, fp16: bool = False,
                fp16_io: bool = False, sample_hw: tuple[int, int] = (64, 96)) -> OnnxGraphs:
    """Write OUT/estimator[_fp16].onnx and OUT/decoder[_fp16].onnx (written to a temporary name, then
    renamed) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    io_dtype = torch.float16 if fp16 and fp16_io else torch.float32
    precision = ("fp16" if fp16 else "fp32") + ("-fp16io" if fp16 and fp16_io else "")
    suffix = "" if precision == "fp32" else "_" + precision.replace("-", "_")
    model = copy.deepcopy(model).eval().to(dtype)  # never round the caller's weights
    metadata = _metadata(model, meta or {}, precision)
    y = torch.rand(1, 1, *sample_hw, dtype=io_dtype)
    z = torch.randn(1, model.cfg.z_dim, dtype=io_dtype)
    decoder = out_dir / f"decoder{suffix}.onnx"
    estimator = None
    with torch.no_grad():
        if model.uses_z:
            estimator = out_dir / f"estimator{suffix}.onnx"
            _export(_EstimatorGraph(model, dtype, io_dtype), (y, z), ["y", "noise"], "z", estimator, metadata)
            _export(_DecoderGraph(model, dtype, io_dtype), (y, z), ["y", "z"], "y_out", decoder, metadata)
        else:
            _export(_DecoderGraph(model, dtype, io_dtype), (y,), ["y"], "y_out", decoder, metadata)
    return OnnxGraphs(estimator, decoder)


def read_metadata(path: Path) -> dict[str, str]:
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}
