#!/usr/bin/env python3
"""Speed against the physical limit, estimator + decoder per luma frame.

Counts the model's FLOPs and the least bytes a frame must move (luma in, luma out, weights once), measures
the device's two ceilings (a large device-to-device copy, a large fp16 matrix product), and times each
PyTorch variant on the GPU: floor, measured time, and their ratio.  Also the fp16 cost in dPSNR on the
bundled sample, and the CPU backends' frames per second (ort-cpu; torch-cpu-bf16 where the CPU computes
bfloat16).

  python scripts/bench.py [--checkpoint STEM | --model-config JSON] [--sizes 960x540,1920x1080,3840x2160] [--out FILE]

--model-config times an untrained network of that shape (the time does not depend on the weights; no quality
or CPU figure then): a candidate's speed is known before it is trained.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import run
from torch.utils.flop_counter import FlopCounterMode

from diffqe.model import checkpoint
from diffqe.model.config import ModelConfig
from diffqe.model.diffqe import DiffQE, default_noise
from diffqe.plugin.backends import native_bf16
from diffqe.plugin.torch_runner import CudaGraph
from diffqe.train.codec import read_video_luma
from diffqe.train.metrics import psnr

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median_seconds(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20) -> float:
    """Median wall time of fn(): CUDA events on the GPU, a host clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ceilings() -> tuple[float, float]:
    """(bytes/s of a 1 GiB device copy counting read + write, FLOP/s of an 8192^3 fp16 matrix product)."""
    src = torch.randn(2**29, device="cuda", dtype=torch.float16)
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() * 2 / median_seconds(lambda: dst.copy_(src))
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.float16) for _ in range(2))
    rate = 2 * 8192**3 / median_seconds(lambda: a @ b)
    del src, dst, a, b
    return bandwidth, rate


def frame_flops(model: DiffQE, h: int, w: int) -> float:
    """FLOPs of one frame (2 per multiply-add), counted on the model itself; the same in every precision."""
    p = next(model.parameters())
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, h, w, device=p.device, dtype=p.dtype))
    return float(counter.get_total_flops())


def least_bytes(model: DiffQE, h: int, w: int, bytes_per_value: int) -> float:
    """The luma read once, written once, and the inference weights read once."""
    weights = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    return float((2 * h * w + weights) * bytes_per_value)


def load_network(ckpt: Path | None, model_config: Path | None) -> DiffQE:
    """The weights at CKPT (default: shipped), or with MODEL_CONFIG an untrained network of that shape, its
    zero-initialised tail drawn at random too (all-zero weights can run faster than real ones)."""
    if model_config is None:
        return checkpoint.load(ckpt)[0]
    torch.manual_seed(0)
    model = DiffQE(ModelConfig.load(model_config)).eval()
    torch.nn.init.normal_(model.decoder.tail.weight, std=1e-3)
    return model


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: torch.dtype
    compile: str = ""  # torch.compile mode; "" = eager
    graphs: bool = False  # replay a captured CUDA graph (plugin.torch_runner.CudaGraph), as the torch backend does


VARIANTS = (
    Variant("torch fp32 (TF32 off)", torch.float32),
    Variant("torch fp16 channels-last", torch.float16),
    Variant("torch fp16 + CUDA graphs", torch.float16, graphs=True),
    Variant("torch fp16 + compile + CUDA graphs", torch.float16, "default", graphs=True),
    Variant("torch fp16 + compile max-autotune + CUDA graphs", torch.float16, "max-autotune-no-cudagraphs", graphs=True),
)


def build(base: DiffQE, v: Variant) -> DiffQE:
    model = DiffQE(base.cfg)
    model.load_state_dict(base.state_dict())
    model = model.to("cuda", v.dtype).to(memory_format=torch.channels_last).eval()
    if v.compile:
        torch._dynamo.reset()
        model.estimator = torch.compile(model.estimator, mode=v.compile, dynamic=False)
        model.decoder = torch.compile(model.decoder, mode=v.compile, dynamic=False)
    return model


@torch.inference_mode()
def forward_fn(model: DiffQE, v: Variant, batch: int, h: int, w: int) -> Callable[[], torch.Tensor]:
    # Several input sets in rotation, so that repeated runs do not time a warm cache.
    ys = [torch.rand(batch, 1, h, w, device="cuda", dtype=v.dtype).contiguous(memory_format=torch.channels_last)
          for _ in range(3)]
    noise = default_noise(model.cfg.z_dim, batch).to("cuda", v.dtype)
    forward = CudaGraph(model, ys[0], noise) if v.graphs else model
    state = {"i": 0}

    @torch.inference_mode()
    def fn() -> torch.Tensor:
        state["i"] += 1
        return forward(ys[state["i"] % 3], noise)

    return fn


def sample_frames() -> tuple[np.ndarray, np.ndarray]:
    return np.stack(read_video_luma(SAMPLES / "sample.mp4")), np.stack(read_video_luma(SAMPLES / "reference.mkv"))


def sample_psnr(model: DiffQE, dtype: torch.dtype, decoded: np.ndarray, reference: np.ndarray) -> float:
    with torch.inference_mode():
        y = torch.from_numpy(decoded).to("cuda", torch.float32)[:, None] / 255
        out = model(y.to(dtype).contiguous(memory_format=torch.channels_last)).float()
    out = (out[:, 0] * 255).round().clamp(0, 255).byte().cpu().numpy()
    return float(np.mean([psnr(o, r) for o, r in zip(out, reference)]))


def cpu_fps(backend: str, ckpt: Path | None, h: int, w: int) -> float:
    from diffqe.plugin.backends import create

    runner = create(backend, checkpoint=ckpt)
    y = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    noise = default_noise(runner.z_dim).numpy()
    seconds = median_seconds(lambda: runner.decode(y, runner.estimate(y, noise)), warmup=1, iters=3)
    return 1.0 / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    source.add_argument("--model-config", type=Path, help="JSON with ModelConfig fields: an untrained network")
    ap.add_argument("--sizes", default="960x540,1920x1080,3840x2160")
    ap.add_argument("--batch", type=int, default=1, help="frames per call")
    ap.add_argument("--variants", default="0,1,2,3",
                    help="indices into: " + "; ".join(f"{i} {v.name}" for i, v in enumerate(VARIANTS)))
    ap.add_argument("--cpu-size", default="960x540",
                    help="frame size for the CPU backends' figures ('' to skip)")
    ap.add_argument("--budget-s", type=float, default=480, help="skip the remaining GPU variants after this long")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    base = load_network(args.checkpoint, args.model_config)
    trained = args.model_config is None
    lines = []
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        started = time.time()
        bandwidth, rate = ceilings()
        gpu = torch.cuda.get_device_name()
        log(f"{gpu}: copy {bandwidth / 1e12:.2f} TB/s, fp16 matrix product {rate / 1e12:.0f} TFLOP/s")
        lines += [f"Device: {gpu}; measured ceilings: device copy {bandwidth / 1e12:.2f} TB/s (read + write), "
                  f"fp16 matrix product {rate / 1e12:.0f} TFLOP/s; batch {args.batch}; torch {torch.__version__}.", "",
                  "| variant | frame | GFLOP/frame | floor (ms) | measured (ms) | frames/s | TFLOP/s | floor/measured |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        if not trained:
            lines[0] += f" Network: {args.model_config}, untrained."
        decoded, reference = sample_frames()
        counting = build(base, VARIANTS[1])  # eager fp16; the counts hold for every variant
        flops = {(w, h): frame_flops(counting, h, w) for w, h in sizes}
        del counting
        quality = []
        for index in (int(i) for i in args.variants.split(",")):
            v = VARIANTS[index]
            if time.time() - started > args.budget_s:
                log(f"skipping {v.name}: over the {args.budget_s:.0f} s budget")
                continue
            model = build(base, v)
            for w, h in sizes:
                t0 = time.time()
                seconds = median_seconds(forward_fn(model, v, args.batch, h, w)) / args.batch
                f = flops[(w, h)]
                floor = max(f / rate, least_bytes(base, h, w, v.dtype.itemsize) / bandwidth)
                lines.append(f"| {v.name} | {w}x{h} | {f / 1e9:.0f} | {floor * 1e3:.3f} | {seconds * 1e3:.3f} | "
                             f"{1 / seconds:.1f} | {f / seconds / 1e12:.1f} | {floor / seconds:.1%} |")
                log(lines[-1] + f"  ({time.time() - t0:.0f} s incl. compile)")
            if trained:
                quality.append((v.name, sample_psnr(model, v.dtype, decoded, reference)))
            del model
            torch.cuda.empty_cache()
        if quality:
            psnr_in = float(np.mean([psnr(d, r) for d, r in zip(decoded, reference)]))
            lines += ["", f"Quality on the bundled sample (8 frames, PSNR in {psnr_in:.3f} dB):", "",
                      "| variant | PSNR out (dB) | dPSNR (dB) | against the first variant (dB) |", "|---|---:|---:|---:|"]
            lines += [f"| {name} | {p:.4f} | {p - psnr_in:+.4f} | {p - quality[0][1]:+.4f} |" for name, p in quality]
    if args.cpu_size and trained:
        w, h = (int(v) for v in args.cpu_size.split("x"))
        names = ["ort-cpu"] + (["torch-cpu-bf16"] if native_bf16() else [])
        rates = ", ".join(f"{name} {cpu_fps(name, args.checkpoint, h, w):.2f}" for name in names)
        lines += ["", f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), frames/s at "
                      f"{w}x{h}: {rates}."]
    elif args.cpu_size:
        log("no CPU figures for an untrained network (--model-config): it has no exported graph")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    run(main)
