"""Static scenes for the temporal term: each corpus image repeated as a short clip, coded random-access by x265.

x265 codes the repeats of a still as skips, except where a later frame refines a block (mostly by one code
value): the input changes a little there, and a model that does not flicker changes its output no more.  Only
stills whose frames differ somewhere are kept.  The cache is resumable and reproducible: an image's CRF
depends only on the seed and its name.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..model.files import atomic_write
from .codec import decode_luma, encode_video
from .pairs import SeededSampler, corpus_images, encode_all, save_png


def _encode_still(job: tuple[str, str, float, int]) -> list[str] | None:
    """Code one still; writes its frames (PNG) and returns them, or None (and a
    marker, so that a resumed run does not code it again) when every frame is the same."""
    gt_path, stem, crf, frames = job
    marker = Path(stem + ".static")
    paths = [f"{stem}_f{i}.png" for i in range(frames)]
    if marker.exists():
        return None
    if all(Path(p).exists() for p in paths):
        return paths
    y = np.asarray(Image.open(gt_path))
    decoded = decode_luma(encode_video([y] * frames, crf=crf, intra=False))
    if all(np.array_equal(d, decoded[0]) for d in decoded[1:]):
        marker.touch()
        return None
    for path, d in zip(paths, decoded):
        save_png(path, d)
    return paths


def make_stills(corpus: Path, out: Path, *, crf_range: tuple[float, float] = (22, 36), frames: int = 8,
                seed: int = 0, workers: int | None = None) -> Path:
    """Code every image of CORPUS/{train,val} as a FRAMES-long still; writes OUT/stills.json, returns its path."""
    jobs, meta = [], []
    for split, gt in corpus_images(corpus, out):
        crf = round(random.Random(f"{seed}:{gt.stem}").uniform(*crf_range), 1)
        jobs.append((str(gt), str(out / split / f"{gt.stem}_crf{crf:g}"), crf, frames))
        meta.append({"split": split, "gt": str(gt.resolve()), "crf": crf})
    coded = encode_all(_encode_still, jobs, workers, "coded stills:")
    entries = [m | {"frames": [str(Path(p).resolve()) for p in paths]} for m, paths in zip(meta, coded) if paths]
    print(f"{len(entries)} of {len(jobs)} stills change between frames", file=sys.stderr)
    manifest = out / "stills.json"
    atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps({"seed": seed, "stills": entries}, indent=2)))
    return manifest


@dataclass
class Still:
    gt: np.ndarray
    frames: np.ndarray  # [T,H,W] decoded
    crf: float


def load_stills(manifest: Path, split: str) -> list[Still]:
    doc = json.loads(Path(manifest).read_text())
    return [Still(np.asarray(Image.open(e["gt"])), np.stack([np.asarray(Image.open(f)) for f in e["frames"]]), e["crf"])
            for e in doc["stills"] if e["split"] == split]


class StillSampler(SeededSampler):
    """Crops of two consecutive frames of a still, placed over a pixel that changed between them (elsewhere
    both frames are equal and the term has nothing to say), aligned to the 8x8 grid, with flips."""

    def __init__(self, stills: list[Still], patch: int, batch: int, seed: int = 0) -> None:
        super().__init__(patch, batch, seed)
        self.changes = []  # (still, frame index t, changed pixels between t and t+1)
        for s in stills:
            if min(s.gt.shape) < patch:
                continue
            for t in range(len(s.frames) - 1):
                rows, cols = np.nonzero(s.frames[t] != s.frames[t + 1])
                if len(rows):
                    self.changes.append((s, t, rows, cols))
        if not self.changes:
            raise ValueError(f"no still with changes is at least {patch}px on its short side")

    def _origin(self, at: int, size: int) -> int:
        lo, hi = max(0, at - self.patch + 1), min(at, size - self.patch)
        return 8 * (int(self.rng.integers(lo, hi + 1)) // 8)

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> frame t, frame t+1 and GT, each float32 [B,1,P,P] in [0,1]."""
        out = np.empty((3, self.batch, 1, self.patch, self.patch), np.float32)
        for i in range(self.batch):
            still, t, rows, cols = self.changes[self.rng.integers(len(self.changes))]
            k = self.rng.integers(len(rows))
            h, w = still.gt.shape
            top, left = self._origin(rows[k], h), self._origin(cols[k], w)
            window = (slice(top, top + self.patch), slice(left, left + self.patch))
            planes = [still.frames[t][window], still.frames[t + 1][window], still.gt[window]]
            flip = self.rng.random() < 0.5
            for j, p in enumerate(planes):
                out[j, i, 0] = (p[:, ::-1] if flip else p) / 255.0
        return out[0], out[1], out[2]
