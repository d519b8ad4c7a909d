"""The VapourSynth filter: ``enhance(clip, ...)``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

from ..model.config import MAX_STRENGTH
from ..model.diffqe import default_noise
from ..model.fusion import RADIUS as FUSION_RADIUS
from ..model.fusion import FusionNet, fuse_window
from ..model.fusion import load as load_fusion
from ..model.inference import scale_correction
from ..model.mirror import FLIPS, mirror_average
from ..model.temporal import stabilise
from . import allocator, backends, source_qp
from .tiling import decode_tiled

_SUBSAMPLING = {(0, 0), (1, 0), (1, 1)}  # 4:4:4, 4:2:2, 4:2:0
# How the backends word a failed allocation: PyTorch (CUDA, CPU), ONNX Runtime (its arenas, CUDA), TensorRT.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "failed to allocate memory", "cannot allocate memory",
                  "bad_alloc", "bad allocation")


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or any(m in str(e).lower() for m in _OUT_OF_MEMORY)


def _memory_error(n: int, clip: vs.VideoNode, runner_name: str, tile: tuple[int, int] | None,
                  e: BaseException) -> vs.Error:
    """What ran out, where, and how to make the frame fit: tiles (or smaller ones), not a retry with luck."""
    text = " ".join(str(e).split())
    at = min((i for m in _OUT_OF_MEMORY if (i := text.lower().find(m)) >= 0), default=0)
    start = max(text.rfind(sep, 0, at) for sep in (". ", ") ", "] ")) + 2  # the sentence that says it
    detail = text[start if start > 1 else 0:][:160] or type(e).__name__
    if tile:
        fix = (f"Use smaller tiles than {tile[0]}x{tile[1]} (tile=256 in a script, --tile 256 for diffqe enhance; "
               "the estimator always sees the whole frame)")
    else:
        fix = "Decode in tiles: tile=512 in a script, --tile 512 for diffqe enhance (smaller if it still fails)"
    return vs.Error(f"diffqe.enhance: frame {n} ({clip.width}x{clip.height}): backend {runner_name} ran out of "
                    f"memory ({detail}). {fix}, or free the memory that other processes hold")


def _check_format(clip: vs.VideoNode) -> vs.VideoFormat:
    fmt = clip.format
    if fmt is None or clip.width == 0 or clip.height == 0:
        raise vs.Error("diffqe.enhance: clips of variable format or size are not supported; "
                       "make them constant first (e.g. core.resize.Bicubic(clip, width=..., height=..., format=...))")
    if fmt.color_family == vs.RGB:
        raise vs.Error("diffqe.enhance: RGB input is not supported (the model enhances coded luma); convert "
                       "first, e.g. core.resize.Bicubic(clip, format=vs.YUV444P16, matrix_s='709')")
    if fmt.color_family not in (vs.GRAY, vs.YUV):
        raise vs.Error(f"diffqe.enhance: unsupported color family {fmt.color_family.name}; use GRAY or YUV")
    if fmt.color_family == vs.YUV and (fmt.subsampling_w, fmt.subsampling_h) not in _SUBSAMPLING:
        raise vs.Error(f"diffqe.enhance: {fmt.name}: only 4:2:0, 4:2:2 and 4:4:4 subsampling are supported")
    if fmt.sample_type == vs.INTEGER and not 8 <= fmt.bits_per_sample <= 16:
        raise vs.Error(f"diffqe.enhance: {fmt.name}: integer input must have 8 to 16 bits")
    if fmt.sample_type == vs.FLOAT and fmt.bits_per_sample != 32:
        raise vs.Error(f"diffqe.enhance: {fmt.name}: float input must be 32-bit")
    return fmt


def _deepened(clip: vs.VideoNode, bits: int | None) -> vs.VideoNode:
    """CLIP at BITS per sample (None: as it is), every plane's code values shifted up (v -> v * 2^k, the
    scaling by which the video standards relate code values of different depths), so nothing is lost."""
    fmt = clip.format
    if bits is None or bits == fmt.bits_per_sample:
        return clip
    if fmt.sample_type == vs.FLOAT:
        raise vs.Error(f"diffqe.enhance: bits={bits}: {fmt.name} is float, which keeps the model's correction "
                       "whole already; leave bits out")
    if not fmt.bits_per_sample < bits <= 16:
        raise vs.Error(f"diffqe.enhance: bits must be between the clip's {fmt.bits_per_sample} and 16, got {bits}")
    deeper = fmt.replace(bits_per_sample=bits)
    return clip.std.Expr(f"x {1 << (bits - fmt.bits_per_sample)} *", format=deeper.id)


def _field_order(clip: vs.VideoNode) -> bool | None:
    """True / False where the clip's frames are interlaced, top / bottom field first (frame 0's ``_FieldBased``,
    as source filters set it); None where they are progressive."""
    return {1: False, 2: True}.get(int(clip.get_frame(0).props.get("_FieldBased", 0)))


def _tile_size(tile: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if tile is None:
        return None
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    return int(th), int(tw)


def enhance(
    clip: vs.VideoNode,
    *,
    backend: backends.BackendSpec | str | None = None,
    checkpoint: str | Path | None = None,
    tile: int | tuple[int, int] | None = None,
    overlap: int = 16,
    seed: int = 0,
    ensemble: int = 1,
    strength: float = 1.0,
    temporal: int = 2,
    fusion: bool = True,
    bits: int | None = None,
    qp_guard: bool = True,
    engine_dir: str | Path | None = None,
) -> vs.VideoNode:
    """Enhance the luma of an HEVC-decoded clip without knowing its QP.

    Per frame, the estimator sees the whole luma plane and returns the feature vector Z; the decoder then
    restores the plane, whole or in tiles; static regions are then stabilised across frames.  Chroma passes
    through bit-identical; the output has the input's format (at ``bits`` per sample if given), size and frame
    count.  Interlaced frames (a ``_FieldBased`` of 1 or 2 on frame 0, as source filters set it) are enhanced
    field by field and woven back: their two fields are pictures taken at different times.

    :param clip:       GRAY or YUV (4:2:0, 4:2:2, 4:4:4), integer 8-16 bit or 32-bit float.
    :param backend:    ``Backend.*`` settings or a name: "trt", "ort-trt", "ort-cuda", "torch",
                       "torch-compile", "torch-cpu", "torch-cpu-bf16" (CPUs with AMX or AVX512-BF16),
                       "torch-cpu-bf16-compile" (the same, 1.3x faster after a one-off compile), "ort-cpu".
                       None picks the best available (``backends.best_available``).
    :param checkpoint: weights stem (``NAME`` of NAME.safetensors + NAME.json); default: shipped weights.
    :param tile:       decode in tiles of this size (int or (height, width)) to bound memory; None: whole frame.
    :param overlap:    pixels of context added on each side of a tile and discarded afterwards.
    :param seed:       selects the fixed starting noise of the estimator; the same clip and seed always give
                       the same frames.
    :param ensemble:   1, 2 or 4: average the decoder over that many mirrored copies of the frame (itself;
                       + turned half a turn; + left-right and up-down), with one Z.  Costs that many decoder passes; backs off
                       where the decoder would invent detail, which spares high-quality input and screens
                       (docs/results.md, "Mirror ensemble").
    :param strength:   scales the model's correction: the output is the input plus STRENGTH times what the model
                       changes, 0 to 2.  1 (the default) is the model as trained; below 1 for high-quality
                       encodes and screen content, above 1 only for clean photographic sources coded at QP 27
                       or worse (docs/results.md, "Strength").  Scaled further per frame by ``qp_guard``.
    :param temporal:   radius in frames of the temporal stabilisation (model.temporal): a pixel whose input is
                       the same in a frame within this radius, with nothing in the 8x8 blocks within 16 px changed
                       by more than one 8-bit code value, gets the mean of those frames' outputs, so static scenes
                       flicker less.  0: each frame on its own.  Frame n depends on frames n-temporal..n+temporal,
                       whether played or seeked.
    :param fusion:     on intra-coded pictures (``_PictType`` "I", as source filters set it; all of an all-intra
                       stream), first mean each frame's output with those of its intra-coded neighbours within
                       ``temporal`` (at most 2), weighted per 8x8 block by a small network that tells the coding
                       error of a still scene, which differs from frame to frame, from motion, fades and grain,
                       and in whole 4x4 blocks far quieter than the rest of the frame (model.fusion;
                       docs/results.md, "Temporal fusion").  Frames of other types, frames without
                       ``_PictType`` and frames the QP guard scales down are left to the stabilisation.
    :param bits:       output bit depth of an integer clip, from its own up to 16; None: its own.  The clip is
                       shifted up to it first, chroma too (an 8-bit code value v becomes 4v at 10 bits), and
                       enhanced there, so that the model's correction keeps what it has below one code value of
                       the source instead of rounding it away: the most on clean sources (held-out 8-bit photos
                       coded at QP 22: +0.65 dB at 10 bits against +0.37 at 8; docs/results.md, "Output bit
                       depth").  For re-encoding at 10 bits (x265's Main10).
    :param qp_guard:   on frames with a ``DiffQE_SourceQP`` property (the QP the frame's group of pictures was
                       coded at, its pictures' QPs weighted by the bytes each brings anew, which enhance.vpy
                       reads from H.264, HEVC, AV1, VP9, VP8 and MPEG-2 bitstreams, the last four as the HEVC
                       QP of the same step, ProRes and DNxHR by profile: Proxy and LB whole, SQ as QP 13, finer
                       ones as QP 9), scale ``strength`` by ``source_qp.guard``: whole from QP 17 up, fading to
                       none at QP 9, where the model, trained on coarser pictures, harms near-transparent ones
                       (docs/results.md, "The source-QP guard").
                       Frames it scales to 0 pass through untouched, without running the model; frames it scales
                       at all are not fused (the fusion too harms near-transparent all-intra video).
    :param engine_dir: where ONNX graphs and TensorRT engines are cached (default: engines/).

    Frame properties set: ``DiffQE_Strength`` (the strength the frame got), ``DiffQE_ZMean``, ``DiffQE_ZStd``
    (a summary of the estimated Z), ``DiffQE_Backend`` and, with ``temporal``, ``DiffQE_Fused`` (how many
    neighbouring frames the fusion took in).
    """
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error("diffqe.enhance: clip must be a VideoNode")
    allocator.tune()  # what diffqe enhance gives vspipe, for scripts run by hand
    _check_format(clip)
    clip = _deepened(clip, bits)
    fmt = clip.format
    tile_hw = _tile_size(tile)
    if overlap < 0:
        raise vs.Error(f"diffqe.enhance: overlap must be >= 0, got {overlap}")
    if ensemble not in FLIPS:
        raise vs.Error(f"diffqe.enhance: ensemble must be one of {', '.join(map(str, FLIPS))}, got {ensemble}")
    if not 0 <= strength <= MAX_STRENGTH:
        raise vs.Error(f"diffqe.enhance: strength must be between 0 and {MAX_STRENGTH}, got {strength}")
    if temporal < 0:
        raise vs.Error(f"diffqe.enhance: temporal must be >= 0 (a radius in frames), got {temporal}")
    try:
        runner = backends.create(backend, checkpoint=Path(checkpoint) if checkpoint else None,
                                 engine_dir=Path(engine_dir) if engine_dir else None)
    except (backends.BackendUnavailable, FileNotFoundError, RuntimeError) as e:
        raise vs.Error(f"diffqe.enhance: {e}") from None
    tff = _field_order(clip)
    pictures = clip if tff is None else clip.std.SeparateFields(tff=tff)
    min_side = runner.min_side
    if min(pictures.width, pictures.height) < min_side:
        what = "frames" if tff is None else "fields (half an interlaced frame's height)"
        raise vs.Error(f"diffqe.enhance: {what} must be at least {min_side}x{min_side}, got "
                       f"{pictures.width}x{pictures.height}")
    if tile_hw and min(tile_hw) < 2 * overlap + min_side:
        raise vs.Error(f"diffqe.enhance: tile {tile_hw} is too small for overlap {overlap}; "
                       f"use tiles of at least {2 * overlap + min_side}")
    is_float = fmt.sample_type == vs.FLOAT
    peak = 1.0 if is_float else float((1 << fmt.bits_per_sample) - 1)
    noise = default_noise(runner.z_dim, 1, seed).numpy()
    lock = threading.Lock()  # one inference at a time: TensorRT contexts are not re-entrant

    # A runner that takes the plane as it is (the PyTorch one: conversions on the GPU) does the whole frame in
    # one call, writing into the output frame, and is safe to call from every frame thread: on the GPU it
    # queues one frame while others compute (plugin.torch_runner).
    whole_frame = getattr(runner, "enhance_frame", None) if tile_hw is None else None

    def infer(luma: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray | None]:
        x = torch.from_numpy(luma.astype(np.float32) / np.float32(peak))[None, None]
        z = runner.estimate(x.numpy(), noise) if runner.uses_z else None

        def decode(m: torch.Tensor) -> torch.Tensor:  # CPU tensors share the arrays' memory
            return torch.from_numpy(decode_tiled(lambda t: runner.decode(t, z), m.numpy(), tile_hw, overlap, min_side))

        y = scale_correction(x, mirror_average(decode, x, ensemble), strength).numpy()[0, 0]
        return (y if is_float else np.clip(np.rint(y * peak), 0, peak).astype(luma.dtype)), z

    def process(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        qp = f.props.get("DiffQE_SourceQP") if qp_guard else None
        scaled = strength if qp is None else strength * source_qp.guard(qp)
        out.props["DiffQE_Strength"] = scaled
        if scaled == 0:
            return out
        try:
            if whole_frame:
                z = whole_frame(np.asarray(f[0]), peak, noise, ensemble, scaled, out=np.asarray(out[0]))[1]
            else:
                with lock:
                    y, z = infer(np.asarray(f[0]), scaled)
                np.copyto(np.asarray(out[0]), y)
        except Exception as e:  # ONNX Runtime's errors are plain Exceptions; MemoryError is one too
            if _out_of_memory(e):
                raise _memory_error(n if tff is None else n // 2, pictures, runner.name, tile_hw, e) from None
            raise
        if z is not None:
            out.props["DiffQE_ZMean"] = float(z.mean())
            out.props["DiffQE_ZStd"] = float(z.std())
        out.props["DiffQE_Backend"] = runner.name
        return out

    enhanced = _in_parallel(pictures, [pictures], process)
    if tff is not None:
        enhanced = enhanced.std.DoubleWeave(tff=tff)[::2]
    # One 8-bit code value in the clip's units; float planes get half a value more, so that rounding in the
    # conversion to float does not push a one-value change over it.
    tolerance = 1.5 / 255 if is_float else peak / 255
    # The fusion runs where the backend runs (its cost is a small fraction of the decoder's: docs/performance.md),
    # on the CPU where PyTorch has no CUDA (ONNX Runtime's CUDA provider beside a CPU build of PyTorch).
    device = torch.device(runner.device)
    net = (load_fusion(device=device if device.type == "cpu" or torch.cuda.is_available() else "cpu")
           if fusion and temporal else None)
    return _stabilised(clip, enhanced, min(temporal, clip.num_frames - 1), tolerance, peak, net, qp_guard)


def _shifted(clip: vs.VideoNode, k: int) -> vs.VideoNode:
    """Frame n of the result is frame n + k of CLIP; the ends repeat a frame (``_stabilised`` ignores them)."""
    if k < 0:
        return clip[0] * -k + clip[:k]
    return clip[k:] + clip[-1] * k if k > 0 else clip


def _fusable(frame: vs.VideoFrame, qp_guard: bool) -> bool:
    """Whether FRAME is intra-coded and, with QP_GUARD, coded at a QP the guard leaves whole: on near-transparent
    all-intra clips the fusion harms as the model does (docs/results.md, "The source-QP guard")."""
    kind = frame.props.get("_PictType")
    qp = frame.props.get("DiffQE_SourceQP") if qp_guard else None
    return (kind.decode() if isinstance(kind, bytes) else kind) == "I" and (qp is None or source_qp.guard(qp) == 1)


def _stabilised(clip: vs.VideoNode, enhanced: vs.VideoNode, radius: int, tolerance: float, peak: float,
                fusion: FusionNet | None, qp_guard: bool) -> vs.VideoNode:
    """ENHANCED with each frame fused over its intra-coded neighbours (with FUSION, model.fusion; with QP_GUARD,
    only those the source-QP guard leaves whole), then stabilised over RADIUS frames either side
    (model.temporal)."""
    if radius == 0:
        return enhanced
    # Each per-frame output is read by 2 radius + 1 output frames: cache enough of them that each is inferred
    # once when frames are requested in order, by as many threads as the core runs.
    enhanced.std.SetVideoCache(mode=1, fixedsize=1, maxsize=2 * (2 * radius + 1) + vs.core.num_threads)
    offsets = range(-radius, radius + 1)
    sides = [_shifted(clip, k) for k in offsets] + [_shifted(enhanced, k) for k in offsets]
    last = clip.num_frames - 1

    def process(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        window = [i for i, k in enumerate(offsets) if 0 <= n + k <= last]
        inputs = [np.asarray(f[i][0]) for i in window]
        outputs = [np.asarray(f[len(offsets) + i][0]) for i in window]
        centre = window.index(radius)
        near = [centre]  # the frames fused: the intra-coded ones within FUSION_RADIUS, the centre among them
        if fusion is not None and _fusable(f[radius], qp_guard):
            near = [j for j, i in enumerate(window) if abs(i - radius) <= FUSION_RADIUS and _fusable(f[i], qp_guard)]
        if len(near) > 1:
            outputs[centre] = fuse_window(fusion, [inputs[j] for j in near], [outputs[j] for j in near],
                                          near.index(centre), peak)
        y = stabilise(inputs, outputs, centre, tolerance)
        out = f[len(offsets) + radius].copy()
        np.copyto(np.asarray(out[0]), y)
        out.props["DiffQE_Fused"] = len(near) - 1
        return out

    return _in_parallel(enhanced, sides, process)


def _in_parallel(clip: vs.VideoNode, clips: list[vs.VideoNode],
                 selector: Callable[[int, vs.VideoFrame | list[vs.VideoFrame]], vs.VideoFrame]) -> vs.VideoNode:
    """``std.ModifyFrame(clip, clips, selector)`` as one instance per VapourSynth thread, each taking every k-th
    frame, interleaved back.  VapourSynth runs one instance's Python callbacks one at a time (the filter is
    fmParallelRequests), which would hold the whole pipeline to one core; NumPy and the backends release the
    GIL in their loops, so instances run side by side (docs/performance.md, "Temporal stabilisation")."""
    core = vs.core
    k = min(core.num_threads, clip.num_frames)
    if k == 1:
        return core.std.ModifyFrame(clip, clips, selector)

    def every(c: vs.VideoNode, i: int) -> vs.VideoNode:
        return c.std.SelectEvery(cycle=k, offsets=i, modify_duration=False)

    def part(i: int) -> vs.VideoNode:
        return core.std.ModifyFrame(every(clip, i), [every(c, i) for c in clips], lambda n, f: selector(n * k + i, f))

    return core.std.Interleave([part(i) for i in range(k)], modify_duration=False)
