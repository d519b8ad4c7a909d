"""dPSNR / dSSIM of a model on reference images or clips that are encoded on the fly with x265.

Per the MFQE protocol, PSNR is computed per frame, averaged over a clip, then averaged over clips; a still
image is a one-frame clip.  "mixed" is the mean over the paper's QPs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.diffqe import DiffQE
from ..model.inference import enhance_planes
from .codec import decode_luma, encode_hevc, read_video_luma
from .corpus import find_images, load_luma
from .metrics import psnr, ssim


@dataclass(frozen=True)
class Condition:
    """How a source is coded: all-intra at a fixed QP (the paper) or random-access at a CRF (real streams)."""

    qp: int | None = None
    crf: float | None = None

    @property
    def label(self) -> str:
        return f"QP {self.qp}" if self.qp is not None else f"CRF {self.crf:g} RA"

    def code(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        stream = encode_hevc(frames, qp=self.qp, crf=self.crf, intra=self.qp is not None)
        return decode_luma(stream)


@dataclass
class Source:
    name: str
    frames: list[np.ndarray]


def load_sources(images: list[Path], clips: list[Path], max_frames: int = 30) -> list[Source]:
    """Reference images (luma, cropped to the 8x8 grid, not rescaled) and lossless reference clips."""
    sources = [Source(p.stem, [load_luma(p, downscale=1.0, max_side=1 << 16, min_side=16)]) for p in find_images(images)]
    for clip in clips:
        frames = read_video_luma(clip, max_frames)
        h, w = (frames[0].shape[0] // 8) * 8, (frames[0].shape[1] // 8) * 8
        sources.append(Source(Path(clip).stem, [np.ascontiguousarray(f[:h, :w]) for f in frames]))
    if not sources:
        raise FileNotFoundError("no reference images or clips to evaluate on")
    return sources


@dataclass
class Score:
    psnr_in: float
    dpsnr: float
    ssim_in: float
    dssim: float


def score_source(model: DiffQE, source: Source, cond: Condition, seed: int = 0) -> Score | int:
    """The source's scores, or, where the codec kept it lossless (flat graphics), the largest change in
    code values the model made: a capped PSNR would swamp any dB average."""
    decoded = cond.code(source.frames)
    enhanced = enhance_planes(model, np.stack(decoded), seed=seed)
    if all(np.array_equal(d, r) for d, r in zip(decoded, source.frames)):
        return int(max(np.abs(e.astype(np.int32) - r).max() for e, r in zip(enhanced, source.frames)))
    p_in = [psnr(d, r) for d, r in zip(decoded, source.frames)]
    p_out = [psnr(e, r) for e, r in zip(enhanced, source.frames)]
    s_in = [ssim(d, r) for d, r in zip(decoded, source.frames)]
    s_out = [ssim(e, r) for e, r in zip(enhanced, source.frames)]
    return Score(float(np.mean(p_in)), float(np.mean(p_out) - np.mean(p_in)),
                 float(np.mean(s_in)), float(np.mean(s_out) - np.mean(s_in)))


def evaluate(model: DiffQE, sources: list[Source], conditions: list[Condition], paper_qps: tuple[int, ...],
             seed: int = 0) -> dict[str, list[Score]]:
    """Scores per condition label (one per source); adds "mixed" over the paper's QPs that were run."""
    table: dict[str, list[Score]] = {}
    for cond in conditions:
        for src in sources:
            score = score_source(model, src, cond, seed)
            if isinstance(score, int):
                print(f"{cond.label:12s} {src.name:30s} lossless input; largest change {score} code values",
                      file=sys.stderr)
                continue
            table.setdefault(cond.label, []).append(score)
            print(f"{cond.label:12s} {src.name:30s} PSNR {score.psnr_in:6.2f} dPSNR {score.dpsnr:+.3f} "
                  f"dSSIM {score.dssim:+.5f}", file=sys.stderr)
    mixed = [s for c in conditions if c.qp in paper_qps for s in table[c.label]]
    if mixed:
        table["mixed"] = mixed
    return table


def markdown(table: dict[str, list[Score]], title: str) -> str:
    lines = [f"### {title}", "", "| condition | sources | PSNR in (dB) | dPSNR (dB) | SSIM in | dSSIM |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, scores in table.items():
        mean = lambda attr: np.mean([getattr(s, attr) for s in scores])  # noqa: E731
        lines.append(f"| {label} | {len(scores)} | {mean('psnr_in'):.3f} | {mean('dpsnr'):+.3f} | "
                     f"{mean('ssim_in'):.4f} | {mean('dssim'):+.5f} |")
    return "\n".join(lines) + "\n"
