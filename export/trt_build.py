"""TensorRT engines from the exported ONNX graphs, with a cache that never loads a mismatched engine.

Written against the TensorRT 10/11 Python API: strongly typed networks (the precision comes from the ONNX:
the fp16 graph gives an fp16 engine), one optimization profile over N and H x W, a persistent timing cache.
An engine is stored as ENGINE_DIR/trt/<key>.engine with <key>.json beside it; the key hashes the ONNX bytes,
the TensorRT version, the GPU name and compute capability, the precision, the profile and the builder
options, so a different GPU or TensorRT version gets its own engine instead of a failed or wrong one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..model.files import atomic_write


class TrtUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says what to install where."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TrtUnavailable(
            "TensorRT is not installed. On a machine with an NVIDIA GPU run 'pip install diffqe[nvidia]' "
            "(the tensorrt wheels come from NVIDIA's package index); elsewhere use --onnx-only or the "
            "'ort-cpu' backend") from None
    import torch

    if not torch.cuda.is_available():
        raise TrtUnavailable("TensorRT needs a CUDA GPU and none is visible; use --onnx-only or the 'ort-cpu' backend")
    return trt


@dataclass(frozen=True)
class Profile:
    """Optimization profile: (N, H, W) at min/opt/max; static when all three are equal."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    @classmethod
    def of(cls, min_hw: tuple[int, int], opt_hw: tuple[int, int], max_hw: tuple[int, int], *,
           max_batch: int = 1, static: bool = False) -> Profile:
        """From H x W sizes; ``static`` fixes everything at opt_hw and max_batch."""
        if static:
            return cls(*((max_batch, *opt_hw),) * 3)
        return cls((1, *min_hw), (1, *opt_hw), (max_batch, *max_hw))


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    workspace_gib: float = 4.0
    optimization_level: int = 3


def device_identity() -> dict[str, str]:
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def engine_key(onnx_path: Path, profile: Profile, options: BuildOptions, identity: dict[str, str]) -> str:
    h = hashlib.sha256(Path(onnx_path).read_bytes())
    h.update(json.dumps({"profile": asdict(profile), "options": asdict(options), **identity}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def build_engine(onnx_path: Path, engine_dir: Path, profile: Profile, options: BuildOptions) -> Path:
    """Return the cached engine for this ONNX, GPU and profile, building it (temp name + rename) if needed."""
    trt = import_tensorrt()
    identity = device_identity()
    key = engine_key(onnx_path, profile, options, identity)
    folder = engine_dir / "trt"
    engine_path, manifest_path = folder / f"{key}.engine", folder / f"{key}.json"
    if engine_path.exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in identity.items()):
            return engine_path
        print(f"engine {engine_path} was built for {manifest.get('gpu')} / TensorRT {manifest.get('tensorrt')}; "
              f"rebuilding for {identity['gpu']} / TensorRT {identity['tensorrt']}", file=sys.stderr)
    folder.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)  # TensorRT's logger writes to stderr: stdout may carry video
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = options.optimization_level
    timing_path = folder / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(timing, ignore_mismatch=True)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name == "y":
            shapes = [(n, 1, h, w) for n, h, w in (profile.min, profile.opt, profile.max)]
        else:  # noise or z: [N, D]
            d = tensor.shape[1]
            shapes = [(n, d) for n, _, _ in (profile.min, profile.opt, profile.max)]
        opt_profile.set_shape(tensor.name, *shapes)
    config.add_optimization_profile(opt_profile)
    print(f"building TensorRT engine for {onnx_path.name} ({options.precision}, profile {profile}) ...",
          file=sys.stderr)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see the messages above")
    atomic_write(engine_path, lambda p: p.write_bytes(bytes(serialized)))
    atomic_write(timing_path, lambda p: p.write_bytes(bytes(config.get_timing_cache().serialize())))
    manifest = {"onnx": str(onnx_path), "profile": asdict(profile), "options": asdict(options), **identity}
    atomic_write(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=2)))
    return engine_path
