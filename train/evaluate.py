"""dPSNR / dSSIM of a model on reference images or clips that are encoded on the fly with x265 (or, to see
what it does to their sources, another codec: train.codec.CODERS).

Per the MFQE protocol, PSNR is computed per frame, averaged over a clip, then averaged over clips; a still
image is a one-frame clip.  "mixed" is the mean over the paper's QPs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..model.diffqe import DiffQE
from ..model.inference import restore, scale_correction, to_planes, to_tensor
from ..model.fusion import RADIUS as FUSION_RADIUS
from ..model.fusion import FusionNet, fuse_clip
from ..model.temporal import dilate, stabilise_clip
from ..plugin.source_qp import gop_qps, guard, intermediate_qp, packet_qps, x265_cutree
from .codec import CODERS, decode_luma, encode_video, read_video_luma
from .corpus import at_levels, find_images, load_luma
from .metrics import band_mse, frame_change, psnr, ssim


@dataclass(frozen=True)
class Condition:
    """How a source is coded: all-intra at a fixed QP (the paper) or random-access at a CRF (real streams), by
    x265 or another CODEC (QP and CRF on its own scale)."""

    qp: int | None = None
    crf: float | None = None
    codec: str = "hevc"

    @property
    def label(self) -> str:
        coding = f"QP {self.qp}" if self.qp is not None else f"CRF {self.crf:g} RA"
        return coding if self.codec == "hevc" else f"{self.codec} {coding}"

    def stream(self, frames: list[np.ndarray]) -> bytes:
        """FRAMES through the codec at their depth (bit_depth): a raw bitstream."""
        return encode_video(frames, codec=self.codec, qp=self.qp, crf=self.crf, intra=self.qp is not None,
                            bit_depth=bit_depth(frames[0]))

    def code(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """FRAMES through the codec at their depth (bit_depth) and back."""
        return decode_luma(self.stream(frames), self.codec)


@dataclass(frozen=True)
class Coding:
    """What an enhancer may know of how its input was coded: whether every frame is intra-coded (the fusion's
    cue), and the slice QP the filter's guard reads from the bitstream (None without one), read only when an
    enhancer asks: two ffmpeg processes per encode that an evaluation without --qp-guard need not run."""

    intra: bool
    stream: bytes | None = None
    codec: str = "hevc"

    @cached_property
    def qp(self) -> float | None:
        return None if self.stream is None else stream_qp(self.stream, self.codec)


def stream_qp(stream: bytes, codec: str = "hevc") -> float | None:
    """The QP the filter's source-QP guard reads for the frames of a raw CODEC STREAM: the finest of its GOPs' QPs
    (``gop_qps``; the evaluation's clips are shorter than x265's keyframe interval, so all-intra ones excepted
    they are one GOP, whose frames all get this), or an intermediate's by its profile; None where the guard reads
    none."""
    with tempfile.NamedTemporaryFile(suffix="." + CODERS[codec].container) as f:
        f.write(stream)
        f.flush()
        if (qp := intermediate_qp(Path(f.name))) is not None:
            return qp
        read = packet_qps(Path(f.name))
        return min(gop_qps(read[0], x265_cutree(Path(f.name)))) if read else None


def bit_depth(planes: np.ndarray) -> int:
    """The depth of a source's code values: 10 for uint16 (the 10-bit HDR sources, ``hdr``), else 8."""
    return 10 if planes.dtype == np.uint16 else 8


@dataclass
class Source:
    name: str
    frames: list[np.ndarray]


def load_sources(images: list[Path], clips: list[Path], max_frames: int = 30, clip_downscale: float = 1.0) -> list[Source]:
    """Reference images (luma, cropped to the 8x8 grid, not rescaled) and lossless reference clips.

    ``clip_downscale`` shrinks clips (Lanczos) as the training corpus shrinks photos: clips from packages
    are themselves compressed (MPEG-4, Cinepak), and at full size their own blocking is in the reference,
    so removing it counts as a loss."""
    sources = [Source(p.stem, [load_luma(p, downscale=1.0, max_side=1 << 16, min_side=16)]) for p in find_images(images)]
    for clip in clips:
        frames = read_video_luma(clip, max_frames)
        if clip_downscale != 1.0:
            size = (round(frames[0].shape[1] / clip_downscale), round(frames[0].shape[0] / clip_downscale))
            frames = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames]
        h, w = (frames[0].shape[0] // 8) * 8, (frames[0].shape[1] // 8) * 8
        sources.append(Source(Path(clip).stem, [np.ascontiguousarray(f[:h, :w]) for f in frames]))
    if not sources:
        raise FileNotFoundError("no reference images or clips to evaluate on")
    return sources


def faded(src: Source, frames: int, step: float) -> Source:
    """SRC's single image as a fade to black over FRAMES frames, its white falling STEP code values a frame
    (rounded to code values, as a real fade): a scene whose every pixel drifts slowly, which a temporal filter
    must not average into a blur of the fade's steps."""
    y = src.frames[0].astype(np.float32)
    planes = [np.clip(np.rint((y - 16) * (1 - step * t / 219) + 16), 0, 255).astype(np.uint8) for t in range(frames)]
    return Source(f"{src.name} fade {step:g}", planes)


def scrolled(src: Source, held: int, moving: int, step: int = 4) -> Source:
    """SRC's single image held for HELD frames, then scrolled up STEP rows a frame for MOVING frames (below it, the
    image mirrored, and so on): a slide, then scrolling, which a codec codes as one group of pictures whose
    later pictures copy the keyframe and then bring little more than what scrolls in."""
    y = src.frames[0]
    offsets = [0] * held + [step * (k + 1) for k in range(moving)]
    tall = np.concatenate([y, y[::-1]] * (offsets[-1] // (2 * y.shape[0]) + 2))
    return Source(f"{src.name} held {held} scrolled {moving}", [tall[o: o + y.shape[0]] for o in offsets])


def full_range(src: Source) -> Source:
    """SRC's frames stretched from limited range (16..235, as the corpus and most video) to full range
    (0..255, as many screen recordings and phone videos): the same picture with larger code-value steps."""
    return Source(src.name, [at_levels(f, 0.0, 255.0) for f in src.frames])


def grainy(src: Source, sigma: float, seed: int = 0) -> Source:
    """SRC with Gaussian noise of SIGMA code values added to every frame (fresh each frame), rounded: a camera's
    sensor noise or film grain that is part of the picture, so a filter that takes it for coding noise and
    smooths it loses against the reference."""
    rng = np.random.default_rng(seed)
    frames = [np.clip(np.rint(f + rng.normal(0, sigma, f.shape)), 0, 255).astype(np.uint8) for f in src.frames]
    return Source(f"{src.name} grain {sigma:g}", frames)


def deepened(src: Source) -> Source:
    """SRC's 8-bit frames as 10-bit ones of the same picture (v -> 4v): for codecs that code 10 bits only (ProRes),
    coded and scored at that depth."""
    return Source(src.name, [f.astype(np.uint16) << 2 for f in src.frames])


# SMPTE ST 2084 (PQ) and BT.2100 HLG constants; BT.2408's reference white for SDR content in an HDR signal, and
# the scene light HLG gives it (75 % of the signal).
_PQ_M1, _PQ_M2, _PQ_C1, _PQ_C2, _PQ_C3 = 2610 / 16384, 2523 / 32, 3424 / 4096, 2413 / 128, 2392 / 128
_HLG_A, _HLG_B, _HLG_C = 0.17883277, 0.28466892, 0.55991073
SDR_WHITE_NITS, SDR_WHITE_HLG_SCENE = 203.0, 0.26497
TRANSFERS = ("pq", "hlg")


def hdr(src: Source, transfer: str) -> Source:
    """SRC's limited-range 8-bit frames as 10-bit HDR video of TRANSFER ("pq": HDR10's; "hlg"), the way SDR
    material is placed in an HDR programme (BT.2408): BT.1886 (gamma 2.4) to light, its white at 203 cd/m2 for
    PQ or at HLG's 75 %, then the transfer's inverse, limited range (64..940). On luma alone: a test of what
    another code-value scale does to the model."""
    light = np.clip((np.stack(src.frames).astype(np.float64) - 16) / 219, 0, 1) ** 2.4
    if transfer == "pq":
        y = light * SDR_WHITE_NITS / 10000
        signal = ((_PQ_C1 + _PQ_C2 * y**_PQ_M1) / (1 + _PQ_C3 * y**_PQ_M1)) ** _PQ_M2
    else:
        y = light * SDR_WHITE_HLG_SCENE
        signal = np.where(y <= 1 / 12, np.sqrt(3 * y), _HLG_A * np.log(np.maximum(12 * y - _HLG_B, 1e-12)) + _HLG_C)
    return Source(f"{src.name} {transfer.upper()}", list(np.rint(64 + 876 * signal).astype(np.uint16)))


@dataclass(frozen=True)
class Band:
    """Rows TOP..BOTTOM of a frame and their share of its MSE (metrics.band_mse) before and after an enhancer."""

    top: int
    bottom: int
    before: float
    after: float


@dataclass
class Score:
    psnr_in: float
    dpsnr: float
    ssim_in: float
    dssim: float
    bands: tuple[Band, ...] = ()  # of a losing source: where it loses (evaluate's BANDS)


def worst_bands(reference: np.ndarray, decoded: np.ndarray, output: np.ndarray, rows: int,
                count: int = 3) -> tuple[Band, ...]:
    """Up to COUNT bands of ROWS rows whose share of the MSE the enhancer raised, largest rise first."""
    before, after = band_mse(decoded, reference, rows), band_mse(output, reference, rows)
    height = reference.shape[1]
    return tuple(Band(int(i) * rows, min(height, (int(i) + 1) * rows) - 1, float(before[i]), float(after[i]))
                 for i in np.argsort(before - after, kind="stable")[:count] if after[i] > before[i])


CLIP_CHUNK = 12  # frames per model pass

# [N,H,W] 8-bit luma in, the same out: a model, or a classical post-filter for comparison.
Enhancer = Callable[[np.ndarray, Coding], np.ndarray]  # (decoded [T,H,W], how it was coded) -> enhanced


def model_enhancers(model: DiffQE, seed: int, ensemble: int, radii: list[int], strengths: list[float],
                    fusion: FusionNet | None = None, bits: int = 8, bf16: bool = False,
                    guards: tuple[bool, ...] = (False,)) -> dict[tuple[float, int, bool, bool], Enhancer]:
    """Per (strength, radius, fused, guarded), the model per frame with its correction scaled (model.inference;
    guarded: and by the source-QP guard, plugin.source_qp, where the coding's QP is known), fused
    over up to that many frames either side where every frame is intra-coded (model.fusion; with FUSION only),
    then stabilised over them (model.temporal), as the filter.  All of them share one model pass per input:
    ``evaluate`` and ``temporal_change`` hand every enhancer the same array.  BITS above 8: the 8-bit input
    shifted up to that depth first and everything done there, as the filter's ``bits`` does; the output comes
    back as float in 8-bit code values, so that it scores against the 8-bit reference; 10-bit input (uint16)
    is taken at its own depth.  BF16: the model's convolutions in bfloat16 on the CPU, as the torch-cpu-bf16
    backend runs them (autocast)."""
    last: dict = {"input": None}  # the last input array: its codes, tensor and model output, rounded per strength

    def depth(planes: np.ndarray) -> tuple[int, int]:
        """The shift up to the depth worked at (BITS for 8-bit input, else the input's own), and its peak."""
        own = bit_depth(planes)
        shift = bits - own if own == 8 else 0
        return shift, (1 << (own + shift)) - 1

    def per_frame(planes: np.ndarray, strength: float) -> np.ndarray:
        shift, peak = depth(planes)
        if last["input"] is not planes:
            codes = planes.astype(np.uint16) << shift if shift else planes
            y = to_tensor(codes, peak, next(model.parameters()).device)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                # CLIP_CHUNK frames at a time: a long clip's activations would not fit in memory at once
                out = torch.cat([restore(model, chunk, seed=seed, ensemble=ensemble).float()
                                 for chunk in y.split(CLIP_CHUNK)])
            last.update(input=planes, codes=codes, y=y, out=out, rounded={})
        if strength not in last["rounded"]:  # each radius reads the same rounded output
            last["rounded"][strength] = to_planes(scale_correction(last["y"], last["out"], strength), peak,
                                                  last["codes"].dtype)
        return last["rounded"][strength]

    def enhancer(strength: float, radius: int, fused: bool, guarded: bool) -> Enhancer:
        def run(planes: np.ndarray, coding: Coding) -> np.ndarray:
            shift, peak = depth(planes)
            share = guard(coding.qp) if guarded and coding.qp is not None else 1.0
            out = per_frame(planes, strength * share)
            codes = last["codes"]
            if fused and coding.intra and radius and share == 1:  # as the filter: the guard stops the fusion too
                out = fuse_clip(fusion, codes, out, min(radius, FUSION_RADIUS), peak)
            out = stabilise_clip(codes, out, radius, peak / 255)
            return out.astype(np.float32) / (1 << shift) if shift else out
        return run

    return {(s, r, f, g): enhancer(s, r, f, g) for s in strengths for r in radii
            for f in ((False, True) if fusion and r else (False,)) for g in guards}  # radius 0: no frames to fuse


def ffmpeg_enhancer(video_filter: str) -> Enhancer:
    """A classical post-filter: the frames through ``ffmpeg -vf VIDEO_FILTER`` as raw 8-bit gray video."""

    def run(planes: np.ndarray, coding: Coding) -> np.ndarray:
        n, h, w = planes.shape
        cmd = ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{w}x{h}", "-i", "-",
               "-vf", video_filter, "-f", "rawvideo", "-pix_fmt", "gray", "-"]
        out = subprocess.run(cmd, input=np.ascontiguousarray(planes).tobytes(), capture_output=True, check=True).stdout
        return np.frombuffer(out, np.uint8).reshape(n, h, w)

    return run


def frame_scores(frames: list[np.ndarray] | np.ndarray, reference: list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR and mean SSIM of FRAMES against REFERENCE, per frame then averaged (MFQE), at the reference's
    peak (255, or 1023 for 10-bit references)."""
    peak = float((1 << bit_depth(reference[0])) - 1)
    return (float(np.mean([psnr(f, r, peak) for f, r in zip(frames, reference)])),
            float(np.mean([ssim(f, r, peak) for f, r in zip(frames, reference)])))


Table = dict[str, dict[str, list[tuple[str, Score]]]]  # enhancer -> condition -> [(source, score)]


def evaluate(enhancers: dict[str, Enhancer], sources: list[Source], conditions: list[Condition],
             paper_qps: tuple[int, ...], bands: int = 0) -> tuple[Table, dict[str, float]]:
    """Each source is coded once per condition and given to every enhancer; adds "mixed" over the paper's
    QPs that were run.  Also returns, per enhancer, the largest change it made to a source the codec kept
    lossless (flat and black frames): that must stay within one code value.  BANDS above 0: a source that
    loses PSNR carries the bands of that many rows where it loses most (Score.bands)."""
    table: Table = {name: {} for name in enhancers}
    lossless = {name: 0.0 for name in enhancers}
    for cond in conditions:
        for src in sources:
            stream = cond.stream(src.frames)
            decoded, coding = decode_luma(stream, cond.codec), Coding(cond.qp is not None, stream, cond.codec)
            # Where the codec kept a source lossless (flat graphics) a capped PSNR would swamp any dB average:
            # such sources report the largest change in code values instead.
            kept = all(np.array_equal(d, r) for d, r in zip(decoded, src.frames))
            psnr_in, ssim_in = (0.0, 0.0) if kept else frame_scores(decoded, src.frames)
            planes = np.stack(decoded)  # one array for all: enhancers of one model share its pass on it
            reference = np.stack(src.frames)
            for name, enhance in enhancers.items():
                enhanced = enhance(planes, coding)
                if kept:
                    change = float(max(np.abs(e.astype(np.float32) - r).max() for e, r in zip(enhanced, src.frames)))
                    lossless[name] = max(lossless[name], change)
                    print(f"{name:10s} {cond.label:12s} {src.name:30s} lossless input; largest change {change:g} "
                          "code values", file=sys.stderr)
                    continue
                psnr_out, ssim_out = frame_scores(enhanced, src.frames)
                result = Score(psnr_in, psnr_out - psnr_in, ssim_in, ssim_out - ssim_in)
                if bands and result.dpsnr < 0:
                    result.bands = worst_bands(reference, planes, np.asarray(enhanced), bands)
                table[name].setdefault(cond.label, []).append((src.name, result))
                print(f"{name:10s} {cond.label:12s} {src.name:30s} PSNR {result.psnr_in:6.2f} "
                      f"dPSNR {result.dpsnr:+.3f} dSSIM {result.dssim:+.5f}"
                      + "".join(f"; rows {b.top}-{b.bottom} {b.before:.3f} -> {b.after:.3f}" for b in result.bands),
                      file=sys.stderr)
    for rows in table.values():
        mixed = [s for c in conditions if c.qp in paper_qps for s in rows.get(c.label, [])]
        if mixed:
            rows["mixed"] = mixed
    return table, lossless


def temporal_change(enhancers: dict[str, Enhancer], images: list[Source], frames: int = 8, crf: float = 28,
                    reach: int = 32) -> str:
    """Flicker on static scenes: each still repeated FRAMES times and coded random-access at CRF (so every
    frame carries different coding noise); the mean absolute frame-to-frame difference of each enhancer's
    output, against the decoded input's.  A filter that does not flicker keeps it at or below the input's.
    "far" is the part of it more than REACH pixels from any change of the input: what a local filter cannot
    cause (a frame-global path, such as attention pooled over the whole frame, can)."""
    base, rows, far = [], {name: [] for name in enhancers}, {name: [] for name in enhancers}
    for src in images:
        stream = Condition(crf=crf).stream([src.frames[0]] * frames)
        decoded, coding = np.stack(decode_luma(stream)), Coding(False, stream)
        moved = frame_change(decoded)
        near = dilate(moved > 0, reach)
        still_in = float(moved.mean())
        base.append(still_in)
        for name, enhance in enhancers.items():
            out = frame_change(enhance(decoded, coding))
            still_out = float(out.mean())
            rows[name].append(still_out)
            print(f"{name:10s} CRF {crf:g} still {src.name:30s} input {still_in:.5f} output {still_out:.5f} "
                  f"excess {still_out - still_in:+.5f}", file=sys.stderr)  # per still, to 5 places
            far[name].append(float(out[~near].sum() / out.size))
    lines = [f"**Static scenes** ({len(images)} stills x {frames} frames, CRF {crf:g} RA): mean absolute frame-to-frame "
             "difference in code values; worst = the largest excess over the input's on any one still; far = the "
             f"part of the mean more than {reach} px from any change of the input", "",
             "| | mean | worst excess | far |", "|---|---:|---:|---:|", f"| decoded input | {np.mean(base):.4f} | | |"]
    lines += [f"| {name} | {np.mean(v):.4f} | {max(np.subtract(v, base)):+.4f} | {np.mean(far[name]):.4f} |"
              for name, v in rows.items()]
    return "\n".join(lines) + "\n"


def markdown(table: Table, title: str, lossless: dict[str, float] | None = None) -> str:
    """Three tables, enhancers as rows and conditions as columns: mean dPSNR, mean dSSIM, and the worst
    single source's dPSNR (a filter must not harm any one clip); then the lossless sources' largest change."""
    first = next(iter(table.values()))  # every enhancer saw the same sources: the inputs' figures from one
    labels = list(first)
    head = "| | " + " | ".join(labels) + " |\n|---|" + "---:|" * len(labels)
    psnr_in = {lab: np.mean([s.psnr_in for _, s in first[lab]]) for lab in labels}
    parts = [f"### {title}", "", "Sources per condition: " + ", ".join(f"{lab} {len(first[lab])}" for lab in labels), ""]
    for caption, cell in (
        ("dPSNR (dB), mean over sources", lambda xs: f"{np.mean([s.dpsnr for _, s in xs]):+.3f}"),
        ("dSSIM, mean over sources", lambda xs: f"{np.mean([s.dssim for _, s in xs]):+.5f}"),
        ("worst source's dPSNR (dB)", lambda xs: "{:+.3f} ({})".format(*min((s.dpsnr, n) for n, s in xs))),
    ):
        parts += [f"**{caption}**", "", head, "| PSNR in | " + " | ".join(f"{psnr_in[lab]:.3f}" for lab in labels) + " |"]
        parts += [f"| {name} | " + " | ".join(cell(rows[lab]) for lab in labels) + " |" for name, rows in table.items()]
        parts.append("")
    losses = [(name, lab, src, s) for name, rows in table.items() for lab, xs in rows.items() if lab != "mixed"
              for src, s in xs if s.bands]
    if losses:
        parts += ["**Where the losing sources lose**: the bands of rows whose share of the MSE (their squared error "
                  "over the source's pixel count, all its frames, code values squared; a source's bands sum to its "
                  "MSE) rose most, input -> output", "", "| | condition | source | dPSNR | rows | input | output |",
                  "|---|---|---|---:|---:|---:|---:|"]
        parts += [f"| {name} | {lab} | {src} | {s.dpsnr:+.3f} | {b.top}-{b.bottom} | {b.before:.4f} | {b.after:.4f} |"
                  for name, lab, src, s in losses for b in s.bands]
        parts.append("")
    if lossless:
        parts += ["Sources the codec kept lossless (flat and black frames), largest change in code values: "
                  + ", ".join(f"{name} {v:g}" for name, v in lossless.items()), ""]
    return "\n".join(parts)
