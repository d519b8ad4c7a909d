#!/usr/bin/env python3
"""Throughput of the VapourSynth pipeline against the bare backend, on the same frames.

The bare figure runs one backend's estimate + decode on float luma planes already in memory, frame after
frame.  The pipeline figure is `vspipe -p` on a generated script that feeds the same frames (YUV 4:2:0,
8-bit, as decoded HEVC) through `diffqe.enhance` to no output: frame <-> array conversion, rounding, chroma
copy, the temporal stabilisation (model.temporal; ``--temporal 0`` leaves it out) and VapourSynth's
scheduling included, under the allocator settings `diffqe enhance` gives vspipe (plugin.allocator;
the script re-runs itself with them, so vspipe inherits them).  Issue 7's target: the pipeline keeps
>= 90 % at 1080p.  The stabilisation's own throughput is also measured through vspipe on all threads, with
a native one-line stand-in for the model (the sample's pan: so smooth when scaled up that most blocks stay
within a code value, near the worst case): what it leaves of a frame's time budget.

  python scripts/bench_vspipe.py [--backend torch] [--size 1920x1080] [--frames 200] [--temporal 2]
  python scripts/bench_vspipe.py --stabilisation-only [--size 1920x1080] [--frames 240]
  python scripts/bench_vspipe.py --stabilisation-only --intra      # frames marked intra: with the fusion
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import run
from PIL import Image

from diffqe.model.diffqe import default_noise
from diffqe.plugin import allocator, backends
from diffqe.train.codec import read_video_luma

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.mp4"

SCRIPT = """\
import numpy as np
import torch
import vapoursynth as vs
from diffqe.plugin import enhance
from diffqe.model.fusion import load
from diffqe.plugin.filter import _stabilised

if {threads}:
    vs.core.num_threads = {threads}
frames = np.load({frames!r})
clip = vs.core.std.BlankClip(format=vs.YUV420P8, width={w}, height={h}, length={n}, color=[0, 128, 128], keep=False)


def fill(n, f):
    out = f.copy()
    np.copyto(np.asarray(out[0]), frames[n % len(frames)])
    if {intra!r}:  # as a source filter marks an all-intra stream's pictures: the fusion runs
        out.props["_PictType"] = "I"
    return out


source = clip.std.ModifyFrame(clip, fill)
if {model!r}:
    enhance(source, backend={backend!r}, temporal={temporal}).set_output()
else:  # the temporal stage alone (fusion on intra pictures, stabilisation), behind a native stand-in for the model
    _stabilised(source, vs.core.std.Expr(source, ["x 1 +", ""]), {temporal}, 1.0, 255.0,
                load(device="cuda" if torch.cuda.is_available() else "cpu") if {intra!r} else None,
                qp_guard=False).set_output()
"""


def sample_frames(w: int, h: int) -> np.ndarray:
    """The bundled sample's luma frames scaled to WxH (real coded content, not noise or a flat frame)."""
    return np.stack([np.asarray(Image.fromarray(y).resize((w, h), Image.Resampling.BICUBIC))
                     for y in read_video_luma(SAMPLE)])


def bare_fps(backend: str, frames: np.ndarray, count: int) -> float:
    """The runner's own entry, as the filter calls it: whole 8-bit planes where it takes them, else floats."""
    runner = backends.create(backend)
    noise = default_noise(runner.z_dim, 1, 0).numpy()
    if hasattr(runner, "enhance_frame"):
        planes = list(frames)

        def one(x: np.ndarray) -> np.ndarray:
            return runner.enhance_frame(x, 255.0, noise)[0]
    else:
        planes = [(f.astype(np.float32) / 255)[None, None] for f in frames]

        def one(x: np.ndarray) -> np.ndarray:
            return runner.decode(x, runner.estimate(x, noise) if runner.uses_z else None)

    for x in planes[:3]:  # warm-up: engine/graph build, allocator, autotuning
        one(x)
    start = time.perf_counter()
    for i in range(count):
        one(planes[i % len(planes)])
    return count / (time.perf_counter() - start)


def pipeline_fps(backend: str, frames: np.ndarray, count: int, temporal: int, intra: bool,
                 model: bool = True, threads: int = 0) -> float:
    """vspipe -p frames/s of the filter (MODEL) or of its temporal stage alone; INTRA: the frames are marked
    intra-coded, so the fusion runs too; THREADS: VapourSynth's (0: its default)."""
    h, w = frames.shape[1:]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frames.npy", frames)
        script = Path(tmp) / "bench.vpy"
        script.write_text(SCRIPT.format(frames=str(Path(tmp) / "frames.npy"), w=w, h=h, n=count, backend=backend,
                                       temporal=temporal, model=model, intra=intra, threads=threads))
        result = subprocess.run(["vspipe", "-p", str(script), "--"], capture_output=True, text=True)
    # vspipe's last progress line: "Output 200 frames in 8.20 seconds (24.39 fps)"
    match = re.search(r"Output \d+ frames in [\d.]+ seconds \(([\d.]+) fps\)", result.stderr)
    if result.returncode or not match:
        sys.exit(f"error: vspipe failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    return float(match.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="torch", help="a backend name, as enhance.vpy's backend=")
    ap.add_argument("--size", default="1920x1080", help="WxH")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--temporal", type=int, default=2, help="the filter's temporal radius (0: off)")
    ap.add_argument("--stabilisation-only", action="store_true", help="time the temporal stage alone")
    ap.add_argument("--intra", action="store_true",
                    help="mark the frames intra-coded (an all-intra stream), so the temporal fusion runs too")
    ap.add_argument("--threads", type=int, default=0,
                    help="VapourSynth's threads (core.num_threads) in the pipeline; 0: its default, one per core")
    args = ap.parse_args()
    if not allocator.TUNING.keys() <= os.environ.keys():  # measure in-process as `diffqe enhance` runs vspipe
        os.execve(sys.executable, [sys.executable, *sys.argv], allocator.environment())
    w, h = (int(v) for v in args.size.split("x"))
    frames = sample_frames(w, h)
    alone = (pipeline_fps(args.backend, frames, args.frames, args.temporal, args.intra, False, args.threads)
             if args.temporal else None)
    stage = "fusion and stabilisation" if args.intra else "stabilisation"
    if args.stabilisation_only:
        print(f"temporal {stage} alone, radius {args.temporal}, {w}x{h}, {args.frames} frames through vspipe: "
              f"{alone or 0:.1f} frames/s")
        return 0
    bare = bare_fps(args.backend, frames, args.frames)
    piped = pipeline_fps(args.backend, frames, args.frames, args.temporal, args.intra, threads=args.threads)
    print(f"| backend | frame | frames | temporal | bare fps | vspipe fps | kept | {stage} alone, vspipe fps |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.backend} | {w}x{h} | {args.frames} | {args.temporal} | {bare:.2f} | {piped:.2f} | "
          f"{100 * piped / bare:.0f} % | {f'{alone:.1f}' if alone else '-'} |")
    return 0


if __name__ == "__main__":
    run(main)
