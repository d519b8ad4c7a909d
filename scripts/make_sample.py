#!/usr/bin/env python3
"""Rebuild the bundled sample in samples/: a slow pan across a real photograph (Debian kphotoalbum's
demo photos, GPL-2+), as lossless FFV1 reference and an x265 HEVC encode of it.

  python scripts/make_sample.py --photo data/debian/kphotoalbum/usr/share/kphotoalbum/demo/bar55.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np
from _common import run
from PIL import Image

from diffqe.train.corpus import rgb_to_luma


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> limited-range BT.709 yuv420p as one (H*3/2, W) array, PyAV's layout."""
    f = rgb.astype(np.float32) / 255.0
    y = 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]
    cb = (f[..., 2] - y) / 1.8556
    cr = (f[..., 0] - y) / 1.5748
    sub = lambda c: c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))  # noqa: E731
    u = np.clip(np.round(128 + 224 * sub(cb)), 0, 255).astype(np.uint8)
    v = np.clip(np.round(128 + 224 * sub(cr)), 0, 255).astype(np.uint8)
    h, w = y.shape
    return np.concatenate([rgb_to_luma(rgb), u.reshape(h // 4, w), v.reshape(h // 4, w)])


def write(path: Path, frames: list[np.ndarray], codec: str, options: dict, fps: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0] * 2 // 3, "yuv420p"
        stream.codec_context.color_range = 1  # MPEG (limited) range
        stream.codec_context.colorspace = 1  # BT.709
        if codec == "libx265":
            stream.codec_tag = "hvc1"
        for i, a in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(a, format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("samples"))
    ap.add_argument("--size", default="320x192")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--crf", type=float, default=30)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    photo = Image.open(args.photo).convert("RGB")
    width = 2 * w + 4 * args.frames  # room for the pan
    photo = photo.resize((width, round(width * photo.height / photo.width)), Image.Resampling.LANCZOS)
    frames = []
    for i in range(args.frames):  # pan 4 photo pixels (2 output pixels) per frame, then halve
        left, top = 4 * i, (photo.height - 2 * h) // 2
        crop = photo.crop((left, top, left + 2 * w, top + 2 * h)).resize((w, h), Image.Resampling.LANCZOS)
        frames.append(rgb_to_yuv420(np.asarray(crop)))
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "reference.mkv", frames, "ffv1", {}, 25)
    write(args.out / "sample.mp4", frames, "libx265", {"crf": str(args.crf), "preset": "medium",
                                                        "x265-params": "log-level=error:info=0"}, 25)
    return 0


if __name__ == "__main__":
    run(main)
