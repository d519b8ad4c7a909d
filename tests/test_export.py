"""ONNX export and the inference backends.  TensorRT tests run where `tensorrt` and a CUDA GPU exist."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import run_script
from diffqe.export.onnx_export import export_onnx, model_hash, read_metadata
from diffqe.model import checkpoint
from diffqe.model.config import ModelConfig
from diffqe.model.diffqe import DiffQE, default_noise
from diffqe.plugin import backends

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="needs the tensorrt package and a CUDA GPU "
                               "(pip install diffqe[nvidia] on an NVIDIA machine); none here")


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(params=[{}, {"input_unshuffle": 2}, {"light_finest": True}], ids=["full-res", "unshuffle2", "light"])
def lively_model(tiny_cfg, request):
    """A tiny model whose decoder actually changes its input (the trained tail is not zero); also the two
    faster networks of docs/performance.md (the decoder's input pixel-unshuffled; the light finest level)."""
    torch.manual_seed(0)
    model = DiffQE(ModelConfig(**{**json.loads(tiny_cfg.to_json()), **request.param})).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=0.05)
    return model


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_graphs_match_pytorch_on_any_shape(tmp_path, lively_model, reference_frames):
    graphs = export_onnx(lively_model, tmp_path, meta={"qps": [27, 42]})
    for path in (graphs.estimator, graphs.decoder):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
    meta = read_metadata(graphs.decoder)
    assert meta["model_hash"] == model_hash(lively_model) and meta["diffusion_steps"] == "4"
    assert meta["z_dim"] == "16" and meta["pad_multiple"] == str(lively_model.cfg.pad_multiple)
    assert meta["training_qp_range"] == "27-42"
    est, dec = session(graphs.estimator), session(graphs.decoder)
    real = np.stack(reference_frames[:2])[:, None].astype(np.float32) / 255
    for y in (np.random.rand(1, 1, 37, 53).astype(np.float32), np.random.rand(3, 1, 64, 80).astype(np.float32), real):
        noise = np.random.randn(y.shape[0], 16).astype(np.float32)
        with torch.no_grad():
            z_ref = lively_model.estimator(torch.from_numpy(y), torch.from_numpy(noise))
            out_ref = lively_model.decoder(torch.from_numpy(y), z_ref)
        z = est.run(None, {"y": y, "noise": noise})[0]
        out = dec.run(None, {"y": y, "z": z_ref.numpy()})[0]
        assert z.shape == (y.shape[0], 16) and out.shape == y.shape
        assert rel(z, z_ref) <= 1e-4
        assert rel(out - y, out_ref.numpy() - y) <= 1e-4, "the residual itself must match"


def test_fp16_graphs_compute_in_fp16_with_fp32_io(tmp_path, lively_model):
    fp32, fp16 = export_onnx(lively_model, tmp_path), export_onnx(lively_model, tmp_path, fp16=True)
    assert fp16.decoder.name == "decoder_fp16.onnx"
    graph = onnx.load(str(fp16.decoder))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in graph.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    y = np.random.rand(1, 1, 48, 64).astype(np.float32)
    z = np.random.randn(1, 16).astype(np.float32)
    a = session(fp32.decoder).run(None, {"y": y, "z": z})[0]
    b = session(fp16.decoder).run(None, {"y": y, "z": z})[0]
    assert np.abs(a - b).max() < 4e-3
    with torch.no_grad():  # exporting must not round the caller's fp32 weights
        assert lively_model.decoder.tail.weight.dtype == torch.float32


def test_noest_exports_a_decoder_without_z(tmp_path, tiny_cfg):
    cfg = ModelConfig(**{**json.loads(tiny_cfg.to_json()), "variant": "noest"})
    graphs = export_onnx(DiffQE(cfg), tmp_path)
    assert graphs.estimator is None
    assert [i.name for i in onnx.load(str(graphs.decoder)).graph.input] == ["y"]


def test_backends_agree_and_choose_sensibly(tmp_path, reference_frames):
    y = np.stack(reference_frames[:1])[:, None].astype(np.float32) / 255
    noise = default_noise(256).numpy()
    ort_cpu = backends.create("ort-cpu", engine_dir=tmp_path)
    torch_cpu = backends.create(backends.Backend.TORCH(device="cpu", fp16=False), engine_dir=tmp_path)
    z_a, z_b = ort_cpu.estimate(y, noise), torch_cpu.estimate(y, noise)
    assert rel(z_a, z_b) <= 1e-4
    assert rel(ort_cpu.decode(y, z_a), torch_cpu.decode(y, z_a)) <= 1e-4
    model, _ = checkpoint.load()
    with torch.no_grad():
        assert rel(z_a, model.estimate(torch.from_numpy(y))) <= 1e-4
    if not torch.cuda.is_available() and "CUDAExecutionProvider" not in ort.get_available_providers():
        assert backends.best_available() == (backends.NAMES["torch-cpu-bf16"] if backends.native_bf16()
                                             else backends.Backend.ORT_CPU())
        assert backends.best_name() == ("torch-cpu-bf16" if backends.native_bf16() else "ort-cpu")
        with pytest.raises(backends.BackendUnavailable, match=r"diffqe\[nvidia\]"):
            backends.create("ort-cuda", engine_dir=tmp_path)
    with pytest.raises(backends.BackendUnavailable, match="unknown backend"):
        backends.create("cuda-magic")


def test_export_script_onnx_only_and_clear_trt_error(tmp_path):
    result = run_script("export_trt.py", "--onnx-only", "--fp16", "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    paths = result.stdout.split()
    assert len(paths) == 2 and all(p.endswith("_fp16.onnx") for p in paths)
    if not HAS_TRT:
        result = run_script("export_trt.py", "--output", tmp_path / "trt")
        assert result.returncode == 2 and "diffqe[nvidia]" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "trt").exists()


@needs_trt
@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_engine_matches_onnx_runtime(tmp_path, fp16, reference_frames):
    spec = backends.Backend.TRT(fp16=fp16, min_shape=(64, 64), opt_shape=(192, 320), max_shape=(256, 384))
    trt_runner = backends.create(spec, engine_dir=tmp_path)
    ort_runner = backends.create("ort-cpu", engine_dir=tmp_path)
    y = np.stack(reference_frames[:1])[:, None].astype(np.float32) / 255
    noise = default_noise(256).numpy()
    z_ref = ort_runner.estimate(y, noise)
    tol = 1e-2 if fp16 else 1e-4
    assert rel(trt_runner.estimate(y, noise), z_ref) <= tol
    assert np.abs(trt_runner.decode(y, z_ref) - ort_runner.decode(y, z_ref)).max() <= (2e-3 if fp16 else 1e-5)
    engines = sorted((tmp_path / "trt").glob("*.engine"))
    stamps = [p.stat().st_mtime_ns for p in engines]
    backends.create(spec, engine_dir=tmp_path)  # the cache is reused, not rebuilt
    assert [p.stat().st_mtime_ns for p in engines] == stamps
    manifest = json.loads(engines[0].with_suffix(".json").read_text())
    assert manifest["gpu"] == torch.cuda.get_device_name() and manifest["tensorrt"]
    assert trt_runner.min_side == 64  # the filter refuses smaller frames and cuts no smaller tiles
    with pytest.raises(RuntimeError, match="outside what this TensorRT engine was built for"):
        trt_runner.decode(np.zeros((1, 1, 256, 512), np.float32), z_ref)  # wider than the profile's 384


def test_trt_profiles_from_sizes():
    from diffqe.export.trt_build import Profile

    assert Profile.of((64, 64), (1080, 1920), (2160, 3840), max_batch=4) == Profile(
        (1, 64, 64), (1, 1080, 1920), (4, 2160, 3840))
    assert Profile.of((64, 64), (720, 1280), (2160, 3840), max_batch=2, static=True) == Profile(
        (2, 720, 1280), (2, 720, 1280), (2, 720, 1280))
