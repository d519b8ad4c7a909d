"""(GT luma, decoded luma, QP) pairs: every corpus image through real x265, cached on disk.

The cache is resumable (existing pairs are kept) and reproducible: which QPs an image gets depends only on
the seed and the image's name.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..model.files import atomic_write
from .codec import compress_luma

PAPER_QPS = (27, 32, 37, 42)
T, R = TypeVar("T"), TypeVar("R")


def choose_qps(name: str, seed: int, qps: tuple[int, ...] | None, qp_range: tuple[int, int] | None, per_image: int) -> list[int]:
    """The paper's fixed set (every image at every QP), or ``per_image`` QPs drawn from a continuous range."""
    if qp_range is None:
        return list(qps or PAPER_QPS)
    lo, hi = qp_range
    rng = random.Random(f"{seed}:{name}")
    return sorted(rng.sample(range(lo, hi + 1), min(per_image, hi - lo + 1)))


def corpus_images(corpus: Path, out: Path) -> list[tuple[str, Path]]:
    """(split, image) for each PNG of CORPUS/{train,val}, sorted; makes OUT/{train,val} for what comes of them."""
    found = [(split, gt) for split in ("train", "val") for gt in sorted((corpus / split).glob("*.png"))]
    if not found:
        raise FileNotFoundError(f"no images under {corpus}/train or {corpus}/val; build it with scripts/make_corpus.py")
    for split in {split for split, _ in found}:
        (out / split).mkdir(parents=True, exist_ok=True)
    return found


def encode_all(encode: Callable[[T], R], jobs: list[T], workers: int | None, verb: str) -> list[R]:
    """ENCODE(job) for every job on a pool of threads, logging progress.  Threads, not processes: PyAV
    releases the GIL while x265 encodes, and forking a process that already runs threads (PyTorch) can
    deadlock."""
    results = []
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for i, result in enumerate(pool.map(encode, jobs), 1):
            results.append(result)
            if i % 100 == 0 or i == len(jobs):
                print(f"{verb} {i}/{len(jobs)}", file=sys.stderr)
    return results


def save_png(path: str | Path, plane: np.ndarray) -> None:
    """A decoded plane as PNG, whole or not at all (an interrupted run resumes from what exists)."""
    atomic_write(Path(path), lambda tmp: Image.fromarray(plane).save(tmp, format="PNG"))


def _encode_one(job: tuple[str, str, int, str]) -> str:
    gt_path, out_path, qp, preset = job
    y = np.asarray(Image.open(gt_path))
    save_png(out_path, compress_luma(y, qp, preset=preset))
    return out_path


def make_pairs(
    corpus: Path,
    out: Path,
    *,
    qps: tuple[int, ...] | None = None,
    qp_range: tuple[int, int] | None = None,
    per_image: int = 4,
    seed: int = 0,
    preset: str = "medium",
    workers: int | None = None,
) -> Path:
    """Encode every image of CORPUS/{train,val} and write OUT/manifest.json; returns its path."""
    entries, jobs = [], []
    for split, gt in corpus_images(corpus, out):
        for qp in choose_qps(gt.stem, seed, qps, qp_range, per_image):
            dec = out / split / f"{gt.stem}_qp{qp}.png"
            entries.append({"split": split, "gt": str(gt.resolve()), "decoded": str(dec.resolve()), "qp": qp})
            if not dec.exists():
                jobs.append((str(gt), str(dec), qp, preset))
    print(f"{len(entries)} pairs, {len(jobs)} to encode", file=sys.stderr)
    encode_all(_encode_one, jobs, workers, "encoded")
    manifest = out / "manifest.json"
    atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps({"seed": seed, "pairs": entries}, indent=2)))
    return manifest


@dataclass
class Pair:
    gt: np.ndarray
    decoded: np.ndarray
    qp: int
    name: str


def load_pairs(manifest: Path, split: str) -> list[Pair]:
    doc = json.loads(Path(manifest).read_text())
    return [
        Pair(np.asarray(Image.open(e["gt"])), np.asarray(Image.open(e["decoded"])), e["qp"], Path(e["decoded"]).stem)
        for e in doc["pairs"]
        if e["split"] == split
    ]


class SeededSampler:
    """Batches of PATCH-sized crops drawn from a generator whose state a checkpoint keeps, so that a resumed
    run draws what the uninterrupted one would have."""

    def __init__(self, patch: int, batch: int, seed: int) -> None:
        if patch % 8:
            raise ValueError(f"patch size must be a multiple of 8, got {patch}")
        self.patch, self.batch = patch, batch
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class PatchSampler(SeededSampler):
    """Random training crops aligned to the 8x8 block grid (so artefacts keep their phase), with flips:
    left-right only (FLIPS 2, the recipe of the shipped steps) or also up-down (4: the copies that the mirror
    ensemble averages; a crop of a multiple of 8 px keeps the grid under either flip)."""

    def __init__(self, pairs: list[Pair], patch: int, batch: int, seed: int = 0, flips: int = 2) -> None:
        super().__init__(patch, batch, seed)
        if flips not in (2, 4):
            raise ValueError(f"flips must be 2 (left-right) or 4 (and up-down), got {flips}")
        self.flips = flips
        self.pairs = [p for p in pairs if min(p.gt.shape) >= patch]
        if not self.pairs:
            raise ValueError(f"no training image is at least {patch}px on its short side")

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> decoded, gt as float32 [B,1,P,P] in [0,1], and QP as int64 [B]."""
        y = np.empty((self.batch, 1, self.patch, self.patch), np.float32)
        gt = np.empty_like(y)
        qp = np.empty(self.batch, np.int64)
        for i in range(self.batch):
            pair = self.pairs[self.rng.integers(len(self.pairs))]
            h, w = pair.gt.shape
            top = 8 * self.rng.integers((h - self.patch) // 8 + 1)
            left = 8 * self.rng.integers((w - self.patch) // 8 + 1)
            window = (slice(top, top + self.patch), slice(left, left + self.patch))
            a, b = pair.decoded[window], pair.gt[window]
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if self.flips == 4 and self.rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            y[i, 0], gt[i, 0], qp[i] = a / 255.0, b / 255.0, pair.qp
        return y, gt, qp
