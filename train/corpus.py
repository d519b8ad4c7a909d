"""Luma training corpus: photographs (a user's folder or Debian packages) plus a minority of screen-like
images, converted to the limited-range BT.709 luma that decoded video carries, split by image."""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .codec import transcode_luma

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Debian packages that ship real photographs (and a few graphics), with the folders that hold them.
# libjxl-testdata repeats one flower photo in many encodings: only its folders of distinct photos are used.
DEBIAN_PHOTO_PACKAGES: dict[str, tuple[str, ...]] = {
    "mate-backgrounds": ("usr/share/backgrounds",),
    "kphotoalbum": ("usr/share/kphotoalbum/demo",),
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/data",),
    "libjxl-testdata": (
        "usr/share/libjxl-testdata/external/wesaturate/500px",
    ),
    "gnome-backgrounds": ("usr/share/backgrounds/gnome",),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers",),
}

# Wallpaper packages ship one picture in many sizes, named WIDTHxHEIGHT.ext: only the largest is kept.
_SIZE_NAME = re.compile(r"^(\d+)x(\d+)$")


class CorpusError(RuntimeError):
    pass


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """Gamma-encoded RGB (uint8) -> limited-range BT.709 Y' (uint8, 16..235), as an HEVC decoder outputs."""
    r, g, b = (rgb[..., i].astype(np.float32) / 255.0 for i in range(3))
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return np.clip(np.round(16.0 + 219.0 * y), 0, 255).astype(np.uint8)


def load_luma(path: Path, *, downscale: float, max_side: int, min_side: int) -> np.ndarray:
    """Read an image, shrink it (at least by ``downscale``, which washes out JPEG artefacts of the source,
    and to at most ``max_side``), convert to luma and crop to multiples of 8 (the codec's block grid)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorpusError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None
    w, h = im.size
    scale = min(1.0 / downscale, max_side / max(w, h))
    if scale < 1.0:
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    y = rgb_to_luma(np.asarray(im))
    h8, w8 = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    if min(h8, w8) < min_side:
        raise CorpusError(f"{path}: too small ({w}x{h} -> {y.shape[1]}x{y.shape[0]} after scaling; need {min_side}px)")
    top, left = (y.shape[0] - h8) // 2, (y.shape[1] - w8) // 2
    return np.ascontiguousarray(y[top : top + h8, left : left + w8])


FONT_SIZES = [10, 12, 14, 18, 24]  # of synthetic screens' text, in pixels


def screen_like(rng: random.Random, size: tuple[int, int] = (512, 384)) -> np.ndarray:
    """A synthetic screen capture: flat panels, hard edges, gradients and lines of text.  These teach the
    model to leave sharp synthetic content alone."""
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=rng.choice(FONT_SIZES))
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, min(w, x0 + rng.randint(40, w)), min(h, y0 + rng.randint(20, h // 2)))
        draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    if rng.random() < 0.5:  # a smooth gradient band, as in UI backgrounds
        top = rng.randrange(h // 2)
        for i in range(h // 4):
            v = int(255 * i / (h // 4))
            draw.line([(0, top + i), (w, top + i)], fill=(v, v, 255 - v))
    for line in range(rng.randint(4, 16)):
        text = words(rng)
        fill = (0, 0, 0) if rng.random() < 0.7 else (255, 255, 255)
        draw.text((rng.randrange(8, w // 2), rng.randrange(h)), text, fill=fill, font=font)
    return rgb_to_luma(np.asarray(im))


def words(rng: random.Random) -> str:
    """A line of 2-9 words of UI text."""
    vocabulary = "the quick brown fox jumps over lazy dog 0123456789 File Edit View Help OK Cancel".split()
    return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(2, 9)))


def overtyped_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The screen with 3-8 pairs of text lines drawn over each other, the second of each pair a few pixels off
    the first, black or white each (overlapping captions, a UI redrawn over stale text): dense glyphs that x265
    at high quality keeps within a few code values, which a model that has not seen them takes for ringing and
    flattens (docs/training.md, step 33).  Limited-range luma, as screen_like's."""

    def pair(draw: ImageDraw.ImageDraw, x0: int, y0: int, size: int, font) -> None:
        for dx, dy in ((0, 0), (rng.randint(-size, size), rng.randint(2, size))):  # black or white, each line
            draw.text((x0 + dx, y0 + dy), words(rng), fill=16 if rng.random() < 0.7 else 235, font=font)

    return _with_text_lines(y, rng, pair)


def faint_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The screen with 3-8 lines of faint text: each 12-40 code values above or below the median of the ground it
    lands on (grey labels, disabled controls, watermarks, light text on a light gradient).  Strokes that x265 at
    high quality keeps within a few code values and a model may take for its noise (docs/results.md, "Faint
    text").  Limited-range luma, as screen_like's."""

    def faint_line(draw: ImageDraw.ImageDraw, x0: int, y0: int, size: int, font) -> None:
        text = words(rng)
        left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
        ground = float(np.median(y[max(0, top):max(top + 1, bottom), max(0, left):max(left + 1, right)]))
        step = rng.randint(12, 40)
        level = ground + step if ground + step <= 235 and (ground - step < 16 or rng.random() < 0.5) else ground - step
        draw.text((x0, y0), text, fill=int(np.clip(level, 16, 235)), font=font)

    return _with_text_lines(y, rng, faint_line)


def _with_text_lines(y: np.ndarray, rng: random.Random, draw_line: Callable) -> np.ndarray:
    """Y with 3-8 lines of text added by DRAW_LINE(draw, x, y, font size, font), each at a random place and size."""
    im = Image.fromarray(y)
    draw = ImageDraw.Draw(im)
    h, w = y.shape
    for _ in range(rng.randint(3, 8)):
        size = rng.choice(FONT_SIZES)
        draw_line(draw, rng.randrange(8, w // 2), rng.randrange(h - size), size, ImageFont.load_default(size=size))
    return np.asarray(im)


def other_levels(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture at other black and white levels: full-range or super-black video (camera files,
    screen captures, letterboxes at code 0) decodes to values outside 16..235, which a model trained only
    on limited range would shift.  Sometimes crushes the blacks so that whole areas sit at exactly 0."""
    return at_levels(y, rng.uniform(-24.0, 16.0), rng.uniform(235.0, 262.0))


def at_levels(y: np.ndarray, black: float, white: float) -> np.ndarray:
    """Limited-range luma (16..235) stretched so that 16 lands on BLACK and 235 on WHITE, rounded and clipped."""
    out = (y.astype(np.float32) - 16.0) * (white - black) / 219.0 + black
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def soft_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture as soft video carries it (upscaled from a lower resolution, or through soft optics):
    shrunk by 1.5-3x and scaled back up.  Without such pictures a model trained on crisp, shrunk photos
    learns that every picture is crisp and sharpens soft video, which costs PSNR at high quality."""
    factor = rng.uniform(1.5, 3.0)
    kernels = [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]
    return rescaled(y, factor, rng.choice(kernels))


def upscaled_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture as a player or scaler brings a smaller screen recording up to size: shrunk by 1.25-2x and
    scaled back up with a sharp kernel (Lanczos or bicubic), whose overshoot beside every edge is part of
    the picture.  soft_copy draws such a kernel at such a factor for about two copies in nine; a model that has
    seen too few removes the overshoot as if it were the codec's ringing (docs/training.md, step 30)."""
    factor = rng.uniform(1.25, 2.0)
    return rescaled(y, factor, rng.choice([Image.Resampling.BICUBIC, Image.Resampling.LANCZOS]))


def rescaled(y: np.ndarray, factor: float, up: Image.Resampling) -> np.ndarray:
    """Y shrunk FACTOR times (box average, as a camera or a capture at the lower size) and brought back to its
    own size with the kernel UP."""
    h, w = y.shape
    small = Image.fromarray(y).resize((max(8, round(w / factor)), max(8, round(h / factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), up))


def subpixel_shift(y: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Y moved DX pixels left and DY up (each in [0, 1]), bilinear, the last row and column repeated: the same
    size, so still on the codec's block grid."""
    x = np.pad(y, ((0, 1), (0, 1)), mode="edge").astype(np.float32)
    top = (1 - dx) * x[:-1, :-1] + dx * x[:-1, 1:]
    bottom = (1 - dx) * x[1:, :-1] + dx * x[1:, 1:]
    return np.rint((1 - dy) * top + dy * bottom).astype(np.uint8)


def shifted_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture resampled at a fraction of a pixel (0.2-0.8 along each axis): a screen recording scaled
    or moved by a sub-pixel step, whose text and UI edges come out soft without losing their contrast."""
    return subpixel_shift(y, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))


def recompressed_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture after an earlier generation of block-DCT coding (JPEG at quality 30-85; MPEG-2 and
    MPEG-4 part 2 sources carry the same 8x8 blocking and ringing).  As a reference it teaches the model
    that the source's own artefacts are content: a transcode must stay faithful to the source it was given."""
    buf = io.BytesIO()
    Image.fromarray(y).save(buf, format="JPEG", quality=rng.randint(30, 85))
    return np.asarray(Image.open(buf))


def coded_copy(y: np.ndarray, rng: random.Random) -> np.ndarray:
    """The picture as an earlier generation of video coding left it: MPEG-2 or MPEG-4 part 2 at a fixed
    quantiser of 3-10, H.264 at CRF 18-32 (deblocked, 4x4 and 16x16 transforms) or Cinepak (vector-quantised
    4x4 blocks), the codecs real sources were delivered in before a transcode to HEVC.  As a reference it
    teaches what the JPEG copy teaches for those codecs' own artefacts."""
    codec = rng.choice(["mpeg2video", "mpeg4", "libx264", "cinepak"])
    if codec == "libx264":
        options = {"crf": str(rng.randint(18, 32)), "preset": "medium"}
    elif codec == "cinepak":
        options = {}
    else:
        q = str(rng.randint(3, 10))
        options = {"qmin": q, "qmax": q}
    return transcode_luma(y, codec, options)


def flat_frames(rng: random.Random, count: int, size: tuple[int, int] = (256, 192)) -> list[tuple[str, np.ndarray]]:
    """Flat frames (black at 0 and 16, white, mid grey, random levels): the model must return them unchanged."""
    levels = [0, 16, 128, 235, 255] + [rng.randrange(256) for _ in range(max(0, count - 5))]
    return [(f"flat_{v:03d}_{i}", np.full(size[::-1], v, np.uint8)) for i, v in enumerate(levels[:count])]


def find_images(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found += _largest_of_each_size_set(
                sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()))
        else:
            raise CorpusError(f"{root}: no such file or folder; pass folders of images (BSDS500, DIV2K, ...)")
    return found


def _largest_of_each_size_set(paths: list[Path]) -> list[Path]:
    def area(p: Path) -> int:
        w, h = _SIZE_NAME.match(p.stem).groups()
        return int(w) * int(h)

    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        if _SIZE_NAME.match(p.stem):
            by_folder.setdefault(p.parent, []).append(p)
    return [p for p in paths if not _SIZE_NAME.match(p.stem)] + sorted(max(g, key=area) for g in by_folder.values())


def fetch_debian_images(cache: Path, packages: Iterable[str] = DEBIAN_PHOTO_PACKAGES) -> list[Path]:
    """Download the named Debian packages with ``apt-get download`` (no root needed) and unpack them under
    ``cache``; returns the image folders.  A package that cannot be fetched is reported and skipped."""
    cache.mkdir(parents=True, exist_ok=True)
    roots = []
    for pkg in packages:
        dest = cache / pkg
        if not (dest / ".done").exists():
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                got = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
                debs = list(Path(tmp).glob("*.deb"))
                if got.returncode or not debs:
                    print(f"warning: could not download Debian package {pkg}: {got.stderr.strip()[-300:]} "
                          "(run 'apt-get update' first)", file=sys.stderr)
                    continue
                shutil.rmtree(dest, ignore_errors=True)
                subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest)], check=True)
                (dest / ".done").touch()
        roots += [dest / sub for sub in DEBIAN_PHOTO_PACKAGES.get(pkg, ("",))]
    return [r for r in roots if r.exists()]


@dataclass
class CorpusReport:
    written: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    skipped: list[str] = field(default_factory=list)


def build_corpus(
    sources: list[Path],
    out: Path,
    *,
    val_fraction: float = 0.1,
    screen_fraction: float = 0.1,
    screens: int | None = None,
    downscale: float = 2.0,
    max_side: int = 1024,
    min_side: int = 64,
    levels_fraction: float = 0.25,
    soft_fraction: float = 0.0,
    recompressed_fraction: float = 0.0,
    coded_fraction: float = 0.0,
    soft_screen_fraction: float = 0.0,
    shifted_screen_fraction: float = 0.0,
    upscaled_screen_fraction: float = 0.0,
    overtyped_screen_fraction: float = 0.0,
    faint_screen_fraction: float = 0.0,
    screen_levels_fraction: float = 0.0,
    flat: int = 6,
    seed: int = 0,
) -> CorpusReport:
    """Write OUT/{train,val}/NAME.png (8-bit luma) and OUT/manifest.json.  Unreadable or too-small images
    are skipped and listed in the report; the split is by image and reproducible from ``seed``.
    ``levels_fraction`` of the photos get a second copy at other black/white levels (same split as the
    original), as do ``soft_fraction`` of them as a soft copy, ``recompressed_fraction`` as a JPEG-coded
    copy and ``coded_fraction`` as a copy through an earlier video codec; ``soft_screen_fraction`` of the
    synthetic screens also get a soft copy and ``shifted_screen_fraction`` a copy shifted by a fraction of a
    pixel (screen recordings scaled or resampled: soft text) and ``upscaled_screen_fraction`` a copy brought
    up to size with a sharp kernel (text with overshoot), ``overtyped_screen_fraction`` a copy with lines of
    text drawn over each other, ``faint_screen_fraction`` a copy with lines of faint text,
    ``screen_levels_fraction`` of the screens and of those copies a copy at other black/white levels (full-range
    captures), and ``flat`` flat frames are added.  The screens are ``screen_fraction`` of the corpus, or
    ``screens`` of them where given.  Screen I is drawn from a stream of its own, so that it is the same picture,
    in the same split, in every corpus of one seed whatever its other options."""
    report = CorpusReport()
    entries = []
    rng = random.Random(seed)
    for split in ("train", "val"):
        (out / split).mkdir(parents=True, exist_ok=True)

    def emit(name: str, y: np.ndarray, source: str, split_key: str | None = None) -> None:
        split = "val" if random.Random(f"{seed}:{split_key or name}").random() < val_fraction else "train"
        Image.fromarray(y).save(out / split / f"{name}.png")
        report.written[split] += 1
        entries.append({"name": name, "split": split, "source": source, "height": y.shape[0], "width": y.shape[1]})

    def copy_of(name: str, y: np.ndarray, kind: str, fraction: float,
                make: Callable[[np.ndarray, random.Random], np.ndarray], source: str,
                split_key: str | None = None) -> np.ndarray | None:
        """In FRACTION of cases, NAME's copy of KIND (MAKE), in the split of SPLIT_KEY (default NAME).  Each
        copy draws from its own stream, so that adding a kind of copy leaves the rest of a corpus as it was.
        The copy, or None where none was written."""
        copy_rng = random.Random(f"{seed}:{kind}:{name}")
        if not (fraction and copy_rng.random() < fraction):
            return None
        copy = make(y, copy_rng)
        emit(f"{name}_{kind}", copy, source, split_key=split_key or name)
        return copy

    images = find_images(sources)
    copies = 0
    for i, path in enumerate(images):
        try:
            y = load_luma(path, downscale=downscale, max_side=max_side, min_side=min_side)
        except CorpusError as e:
            report.skipped.append(str(e))
            print(f"skipped: {e}", file=sys.stderr)
            continue
        name = f"{i:05d}_{path.stem[:40]}"
        emit(name, y, str(path))
        if levels_fraction and rng.random() < levels_fraction:
            emit(name + "_levels", other_levels(y, rng), f"{path} at other levels", split_key=name)
        # Copies do not count towards the screens' share, so that adding one leaves the rest of a corpus as it was.
        for kind, fraction, make in (("soft", soft_fraction, soft_copy),
                                     ("recompressed", recompressed_fraction, recompressed_copy),
                                     ("coded", coded_fraction, coded_copy)):
            copies += copy_of(name, y, kind, fraction, make, f"{path}, {kind}") is not None
    n_photos = sum(report.written.values()) - copies
    n_screens = math.ceil(screen_fraction * n_photos / max(1e-9, 1 - screen_fraction)) if screens is None else screens
    for i in range(n_screens):
        name = f"screen_{i:04d}"
        y = screen_like(random.Random(f"{seed}:screen:{i}"))
        emit(name, y, "synthetic screen")
        versions = [(name, y)]
        for kind, fraction, make in (("soft", soft_screen_fraction, soft_copy),
                                     ("shift", shifted_screen_fraction, shifted_copy),
                                     ("upscaled", upscaled_screen_fraction, upscaled_copy),
                                     ("overtyped", overtyped_screen_fraction, overtyped_copy),
                                     ("faint", faint_screen_fraction, faint_copy)):
            copy = copy_of(name, y, kind, fraction, make, f"synthetic screen, {kind}")
            if copy is not None:
                versions.append((f"{name}_{kind}", copy))
        for version, v in versions:  # full-range screen captures: the same text with larger code-value steps
            copy_of(version, v, "levels", screen_levels_fraction, other_levels, "synthetic screen at other levels",
                    split_key=name)
    for name, y in flat_frames(rng, flat):
        emit(name, y, "flat frame")
    (out / "manifest.json").write_text(json.dumps({"seed": seed, "images": entries, "skipped": report.skipped}, indent=2))
    return report
