#!/usr/bin/env python3
"""The temporal fusion's cost per frame, outside VapourSynth, where the filter runs it (CUDA when PyTorch has a GPU,
else the CPU): ``model.fusion.fuse_window`` on windows of 5 frames of the bundled sample's pan scaled to each size,
as the filter hands them over on an all-intra stream (decoded planes and per-frame outputs, 8-bit).  Prints the
milliseconds per frame of one calling thread and the frames/s of THREADS threads fusing at once (the filter's frame
threads; on the GPU each on a stream of its own, as ``fuse_window`` does).  With --profile, then PyTorch's
profile of one window per size: the operations that take the most device time (CPU time without a GPU).

  python scripts/bench_fusion.py [--sizes 1920x1080,3840x2160] [--threads 16] [--frames 48] [--profile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from _common import run
from bench_vspipe import sample_frames

from diffqe.model.fusion import fuse_window, load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1920x1080,3840x2160", help="WxH,...")
    ap.add_argument("--threads", type=int, default=16, help="threads fusing at once")
    ap.add_argument("--frames", type=int, default=48, help="frames fused per measurement")
    ap.add_argument("--profile", action="store_true", help="then profile one window per size")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load(device=device)
    rng = np.random.default_rng(0)
    profiles = []
    print(f"| device | frame | one caller, ms/frame | {args.threads} callers, frames/s |\n|---|---|---:|---:|")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        decoded = sample_frames(w, h)
        # per-frame outputs: the decoded planes moved by up to one code value, as the decoder's correction is small
        outputs = np.clip(decoded + rng.integers(-1, 2, decoded.shape), 0, 255).astype(np.uint8)

        def one(n: int) -> np.ndarray:
            a = n % (len(decoded) - 4)
            return fuse_window(net, decoded[a:a + 5], outputs[a:a + 5], 2, 255.0)

        one(0)  # warm-up: cuDNN, the allocator, the thread's stream
        start = time.perf_counter()
        for n in range(args.frames):
            one(n)
        alone = (time.perf_counter() - start) / args.frames
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(one, range(args.threads)))  # each thread's stream and buffers
            start = time.perf_counter()
            list(pool.map(one, range(args.frames)))
            together = args.frames / (time.perf_counter() - start)
        print(f"| {device.type} | {w}x{h} | {1000 * alone:.1f} | {together:.1f} |", flush=True)
        if args.profile:
            profiles.append((size, profiled(lambda: one(0), device)))
    for size, table in profiles:
        print(f"\n{size}, one window:\n```\n{table}\n```")
    return 0


def profiled(work: Callable[[], object], device: torch.device) -> str:
    """PyTorch's table of WORK's operations, those with the most time on DEVICE first."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        work()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profile.key_averages().table(sort_by=key, row_limit=20)


if __name__ == "__main__":
    run(main)
