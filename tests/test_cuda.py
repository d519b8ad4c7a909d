"""The PyTorch CUDA backend against the CPU: fp32 parity, fp16 cost in dPSNR, determinism (issue 4).

These run on a machine with an NVIDIA GPU and a CUDA build of PyTorch (the device machine here) and skip
elsewhere; the numbers they print go to docs/performance.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffqe.model.diffqe import default_noise
from diffqe.model.mirror import mirror_average
from diffqe.plugin.backends import Backend, create
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import psnr

from conftest import SAMPLES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs an NVIDIA GPU and a CUDA build of PyTorch")


@pytest.fixture(scope="module")
def coded() -> np.ndarray:
    """The bundled sample's decoded HEVC frames as float32 [N,1,H,W] in [0,1]."""
    return np.stack(read_video_luma(SAMPLES / "sample.mp4")).astype(np.float32)[:, None] / 255


def enhance(runner, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    noise = np.repeat(default_noise(runner.z_dim).numpy(), len(y), axis=0)
    z = runner.estimate(y, noise)
    return z, runner.decode(y, z)


def test_fp32_cuda_matches_cpu(coded: np.ndarray) -> None:
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 on the GPU
    try:
        z_gpu, out_gpu = enhance(create(Backend.TORCH(device="cuda", fp16=False)), coded)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    z_cpu, out_cpu = enhance(create("torch-cpu"), coded)
    z_err = np.abs(z_gpu - z_cpu).max() / np.abs(z_cpu).max()
    out_err = np.abs(out_gpu - out_cpu).max() / np.abs(out_cpu).max()
    print(f"fp32 CUDA vs CPU: max relative error Z {z_err:.2e}, output {out_err:.2e}")
    assert z_err <= 1e-4 and out_err <= 1e-4


def test_fp16_costs_at_most_0_01_db(coded: np.ndarray) -> None:
    reference = read_video_luma(SAMPLES / "reference.mkv")

    def mean_psnr(out: np.ndarray) -> float:
        codes = np.clip(np.rint(out[:, 0] * 255), 0, 255).astype(np.uint8)
        return float(np.mean([psnr(o, r) for o, r in zip(codes, reference)]))

    fp32 = mean_psnr(enhance(create(Backend.TORCH(device="cuda", fp16=False)), coded)[1])
    fp16 = mean_psnr(enhance(create(Backend.TORCH(device="cuda", fp16=True)), coded)[1])
    before = mean_psnr(coded)
    print(f"sample: input {before:.4f} dB, fp32 {fp32:.4f} dB, fp16 {fp16:.4f} dB ({fp16 - fp32:+.4f})")
    assert abs(fp16 - fp32) <= 0.01


def test_cuda_same_frame_same_output(coded: np.ndarray) -> None:
    """No flicker from the GPU: cuDNN's algorithm choice and atomics must not change a frame's output."""
    runner = create("torch")
    first = [enhance(runner, coded[i:i + 1])[1] for i in range(len(coded))]
    again = [enhance(runner, coded[i:i + 1])[1] for i in range(len(coded))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_cuda_graphs_match_eager(coded: np.ndarray) -> None:
    """The replayed graph computes what the eager model does, also when the frame size changes."""
    graphed, eager = create("torch"), create(Backend.TORCH(cuda_graphs=False))
    for y in (coded[:1], coded[1:2, :, :128, :160], coded[2:3]):
        z_g, out_g = enhance(graphed, y)
        z_e, out_e = enhance(eager, y)
        assert np.abs(z_g - z_e).max() <= 1e-3 and np.abs(out_g - out_e).max() <= 1e-3


def test_whole_frame_codes_match_float_path(coded: np.ndarray) -> None:
    """enhance_frame (8-bit plane in and out, conversions on the GPU) against estimate + decode on floats."""
    runner = create("torch")
    noise = default_noise(runner.z_dim).numpy()
    for y in coded[:3]:
        codes = np.rint(y[0] * 255).astype(np.uint8)
        out, z = runner.enhance_frame(codes, 255.0, noise)
        z_ref, ref = enhance(runner, y[None])
        ref = np.clip(np.rint(ref[0, 0] * 255), 0, 255).astype(np.uint8)
        assert out.dtype == np.uint8 and np.abs(out.astype(int) - ref).max() <= 1 and np.abs(z - z_ref).max() <= 1e-3


def test_whole_frame_strength_is_set_per_frame_in_one_graph(coded: np.ndarray) -> None:
    """The source-QP guard gives frames different strengths: each replay of the one captured graph scales by its
    own (the input plus STRENGTH times the correction, within a code value), and strength 1 is the model's
    output bit for bit."""
    runner = create("torch")
    noise = default_noise(runner.z_dim).numpy()
    codes = np.rint(coded[0, 0] * 255).astype(np.uint8)
    full = runner.enhance_frame(codes, 255.0, noise)[0].astype(int)
    for s in (0.25, 0.625, 0.5, 0.25):
        out = runner.enhance_frame(codes, 255.0, noise, strength=s)[0].astype(int)
        assert np.abs((out - codes) - s * (full - codes)).max() <= 1, s
    assert sum("scaled" in key for key in runner.graphs) == 1  # one graph for every strength but 1
    assert np.array_equal(runner.enhance_frame(codes, 255.0, noise)[0], full)


def test_whole_frame_mirror_ensemble_matches_float_path(coded: np.ndarray) -> None:
    """The four mirrored decoder passes captured in the whole-frame graph against the same average over the
    float path's decode calls; and they are not the single pass."""
    runner = create("torch")
    noise = default_noise(runner.z_dim).numpy()
    y = coded[0]
    codes = np.rint(y[0] * 255).astype(np.uint8)
    out, z = runner.enhance_frame(codes, 255.0, noise, 4)
    ref = mirror_average(lambda t: torch.from_numpy(runner.decode(t.numpy(), z)), torch.from_numpy(y[None]), 4)
    ref = np.clip(np.rint(ref.numpy()[0, 0] * 255), 0, 255).astype(np.uint8)
    single, _ = runner.enhance_frame(codes, 255.0, noise)
    assert np.abs(out.astype(int) - ref).max() <= 1 and not np.array_equal(out, single)


def test_frames_from_many_threads_match_one_at_a_time(coded: np.ndarray) -> None:
    """enhance_frame queues frames from several threads (the filter's frame threads) while others compute: each
    thread gets its own frame's output and Z, written into the array it passed, as one call at a time gives."""
    from concurrent.futures import ThreadPoolExecutor

    runner = create("torch")
    noise = default_noise(runner.z_dim).numpy()
    planes = [np.rint(y[0] * 255).astype(np.uint8) for y in coded] * 4
    alone = [runner.enhance_frame(p, 255.0, noise) for p in planes]
    outs = [np.full_like(p, 7) for p in planes]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: runner.enhance_frame(planes[i], 255.0, noise, out=outs[i]),
                                 range(len(planes))))
    for (a, za), (b, zb), o in zip(alone, together, outs):
        assert b is o and np.array_equal(a, b) and np.array_equal(za, zb)


def test_fusion_from_many_threads_in_a_fresh_process(coded: np.ndarray) -> None:
    """The filter's frame threads fuse on the GPU at once from the start: PyTorch's lazily loaded CUDA linear
    algebra must be loaded before them (pytorch/pytorch#90613), in a process where nothing used it yet."""
    import subprocess
    import sys

    code = """
import numpy as np, torch
from concurrent.futures import ThreadPoolExecutor
from diffqe.model.fusion import fuse_window, load
net = load(device="cuda")
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (256, 320)).astype(np.uint8)
window = [np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(5)]
with ThreadPoolExecutor(16) as pool:
    outs = list(pool.map(lambda _: fuse_window(net, window, window, 2, 255.0), range(32)))
assert all(np.array_equal(o, outs[0]) for o in outs)
print("fused from 16 threads")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
