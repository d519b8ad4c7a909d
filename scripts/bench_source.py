#!/usr/bin/env python3
"""What the source filter costs a job: BestSource's index pass (one decode of the whole input before its first
frame; `diffqe enhance` keeps the index for a resume) and its serving of the frames in order, in frames per
second, and the share of a job's time the index pass adds at given enhancement rates: a markdown table on
stdout.

The input is a video of yours (--input) or one encoded here with PyAV's x265 from the bundled sample's pan
scaled up (bench_vspipe.py's frames), at --size, --frames and --crf.

  python scripts/bench_source.py [--size 1920x1080] [--frames 600] [--enhance-fps 76,119]
  python scripts/bench_source.py --input film.mkv
  bash scripts/device_source.sh         # on the device, the clips device_pack.sh encoded
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import vapoursynth as vs


def encode(path: Path, w: int, h: int, frames: int, crf: int) -> None:
    """FRAMES of the sample's pan at WxH, HEVC (x265 CRF, preset fast) at 25 frames/s, into PATH."""
    import av  # here only: the device machine measures carried clips without PyAV
    from bench_vspipe import sample_frames

    luma = sample_frames(w, h)
    chroma = np.full((h // 2, w // 2), 128, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx265", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "fast", "x265-params": "log-level=error"}
        for i in range(frames):
            frame = av.VideoFrame(w, h, "yuv420p")
            for plane, data in zip(frame.planes, (luma[i % len(luma)], chroma, chroma)):
                rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                rows[:, :plane.width] = data
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def measure(path: Path) -> tuple[int, float, float]:
    """(frames, index pass frames/s, frames/s served in order with VapourSynth's prefetch) for PATH."""
    started = time.perf_counter()
    clip = vs.core.bs.VideoSource(source=str(path), cachemode=0, showprogress=0)  # 0: index afresh, write none
    indexed = time.perf_counter()
    for _ in clip.frames():
        pass
    served = time.perf_counter()
    return clip.num_frames, clip.num_frames / (indexed - started), clip.num_frames / (served - indexed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, help="a video to measure (default: one encoded here)")
    ap.add_argument("--size", default="1920x1080", help="WxH of the encoded video")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--crf", type=int, default=28)
    ap.add_argument("--enhance-fps", default="76,119", help="enhancement rates to state the index pass's share at")
    ap.add_argument("--save", type=Path, help="keep the encoded video here (device_pack.sh: for the device)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.input
        if path is None:
            w, h = map(int, args.size.split("x"))
            path = args.save or Path(tmp) / f"{w}x{h}.mkv"
            encode(path, w, h, args.frames, args.crf)
        elif not path.is_file():
            ap.error(f"{path}: no such file")
        try:
            frames, index_fps, serve_fps = measure(path)
        except vs.Error as e:  # not a video BestSource reads
            ap.error(f"{path}: {e}")
    rates = [float(r) for r in args.enhance_fps.split(",")]
    # a job of F frames: F / index_fps seconds indexing before the first frame, F / rate enhancing after it
    added = " / ".join(f"{100 * rate / index_fps:.1f} %" for rate in rates)
    print(f"| input | frames | threads | index pass, frames/s | served in order, frames/s | added at "
          f"{' / '.join(f'{r:g}' for r in rates)} frames/s enhanced |\n|---|---:|---:|---:|---:|---:|\n"
          f"| {args.input or args.size} | {frames} | {vs.core.num_threads} | {index_fps:.1f} | {serve_fps:.1f} | "
          f"{added} |")

if __name__ == "__main__":  # not _common.run: its imports need PyAV, which the device call does not carry
    main()
