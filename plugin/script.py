"""What enhance.vpy runs: the vspipe arguments (-a key=value) -> BestSource -> enhance -> output (with the
source's alpha plane given -a alpha=1)."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import vapoursynth as vs

from . import allocator
from .source_qp import frame_qps, spared, unread

SCRIPT = "from diffqe.plugin.script import output_from_args\noutput_from_args(globals())\n"
NO_GUARD = "(-a qp_guard=0 gives them all of it)"  # diffqe enhance says its own flag instead
LESS = "(-a strength=0 leaves such a source as it is)"  # likewise


def _number(args: dict, key: str, kind: type, default: float | None) -> float | None:
    """The -a KEY=VALUE argument as KIND, DEFAULT when absent or empty; a clear error when it is not a number."""
    text = args.get(key)
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise vs.Error(f"enhance.vpy: -a {key}={text} is not {'a whole number' if kind is int else 'a number'}") from None


def output_from_args(args: dict) -> None:
    from .filter import enhance  # here: the command line reads SCRIPT and NO_GUARD without loading PyTorch

    allocator.tune()  # before the source filter's decoder threads take arenas of their own
    if "input" not in args:
        raise vs.Error("enhance.vpy: give the input video with -a input=PATH")
    source = Path(args["input"])
    if not source.is_file():
        if source.is_absolute():
            raise vs.Error(f"enhance.vpy: input {source}: no such file")
        # vspipe runs a script from the script's own folder, so a relative path is looked up there.
        raise vs.Error(f"enhance.vpy: input {source} not found in {Path.cwd()} (vspipe's working directory is "
                       f"the script's folder); pass an absolute path, e.g. -a input=\"$PWD/{source}\"")
    decoded, times = decode(source, args.get("index"))
    # the exact count, from the index (ffprobe's is an estimate, or none for a raw .hevc): diffqe enhance shows it
    vs.core.log_message(vs.MESSAGE_TYPE_INFORMATION, f"enhance.vpy: {decoded.num_frames} frames")
    qp_guard = _number(args, "qp_guard", int, 1) != 0
    strength = _number(args, "strength", float, 1.0)
    if qp_guard and strength == 1 and (note := unread(source)):
        vs.core.log_message(vs.MESSAGE_TYPE_WARNING, f"enhance.vpy: {note} {LESS}")
    clip = enhance(
        with_source_qp(decoded, source, times) if qp_guard else decoded,
        backend=args.get("backend") or None,
        checkpoint=args.get("checkpoint") or None,
        tile=_number(args, "tile", int, None),
        overlap=_number(args, "overlap", int, 16),
        seed=_number(args, "seed", int, 0),
        ensemble=_number(args, "ensemble", int, 1),
        strength=strength,
        temporal=_number(args, "temporal", int, 2),
        fusion=_number(args, "fusion", int, 1) != 0,
        bits=_number(args, "bits", int, None),
        qp_guard=qp_guard,
    )
    alpha = bool(_number(args, "alpha", int, 0))
    first = decoded.get_frame(0).props
    if alpha and "_Alpha" not in first:
        raise vs.Error(f"enhance.vpy: -a alpha=1, but BestSource gives no alpha plane for {source}")
    for note in (unstated(first, alpha), drift([float(t) for t in times], decoded.fps)):
        if note:
            vs.core.log_message(vs.MESSAGE_TYPE_WARNING, f"enhance.vpy: {note}")
    if alpha:  # vspipe -c mkv carries it (its y4m cannot)
        clip.set_output(0, alpha=alpha_plane(decoded, clip.format.bits_per_sample))
    else:
        clip.set_output()


def source(path: str | Path) -> vs.VideoNode:
    """PATH decoded as enhance.vpy decodes it (BestSource; the last frame dated), each frame carrying its slice QP
    (H.264, HEVC) as ``DiffQE_SourceQP`` for enhance's qp_guard: for scripts of one's own,
    ``enhance(source(path))``."""
    clip, times = decode(Path(path), None)
    return with_source_qp(clip, Path(path), times)


def with_source_qp(clip: vs.VideoNode, source: Path, times: list[str]) -> vs.VideoNode:
    """CLIP with each frame's QP in SOURCE (source_qp.CODECS; TIMES: BestSource's frame times) as its
    ``DiffQE_SourceQP``, which enhance's qp_guard reads, where any frame is coded finer than the guard's
    FULL_QP; else CLIP as it is (the tagging costs a Python call per frame: 0.2 ms at 1080p on this project's
    CPU, a twentieth of a frame's time at 240 frames/s)."""
    qps = frame_qps(source, [float(t) for t in times], clip.num_frames)
    note = spared(qps or [])
    if not note:
        return clip
    vs.core.log_message(vs.MESSAGE_TYPE_WARNING, f"enhance.vpy: {note} {NO_GUARD}")

    def tag(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        out.props["DiffQE_SourceQP"] = qps[n]
        return out

    return clip.std.ModifyFrame(clip, tag)


def unstated(props: vs.FrameProps, alpha: bool) -> str | None:
    """What vspipe's output (y4m or mkv) does not state of the input's frames (PROPS: the first's), with the
    ffmpeg options that restore it, for whoever pipes vspipe into ffmpeg by hand; None where it states it all."""
    filters, options = [], []
    sar = (props.get("_SARNum", 0), props.get("_SARDen", 0))
    if all(sar) and sar[0] != sar[1]:
        filters.append(f"setsar={sar[0]}/{sar[1]}")
    if props.get("_FieldBased") in (1, 2):  # the frames marked, and the stream (ffmpeg would say "tb")
        top = props["_FieldBased"] == 2
        filters.append(f"setfield={'tff' if top else 'bff'}")
        options += ["-field_order", "tt" if top else "bb"]
    for key, option in (("_Primaries", "color_primaries"), ("_Transfer", "color_trc"), ("_Matrix", "colorspace")):
        if props.get(key, 2) != 2:  # 2: unspecified (ITU-T H.273's codes, which ffmpeg takes as they are)
            options += [f"-{option}", str(int(props[key]))]
    if props.get("_Range") == vs.RANGE_FULL:
        options += ["-color_range", "pc"]
    note = []
    if filters or options:
        restore = " ".join(([f"-vf {','.join(filters)}"] if filters else []) + options)
        note.append(f"vspipe's output does not state the input's pixel aspect ratio, field order or colour; give "
                    f"ffmpeg's output {restore}")
    if "_Alpha" in props and not alpha:
        note.append("the input has an alpha channel (transparency): -a alpha=1 with vspipe -c mkv keeps it, for "
                    "an encoder that writes alpha (ffv1, prores_ks)")
    return "; ".join(note) or None


def decode(source: Path, index: str | None) -> tuple[vs.VideoNode, list[str]]:
    """SOURCE through BestSource, its last frame dated, and its frame times in ms as BestSource writes them
    ("40.00"). BestSource's index (one decode of the whole file) goes to INDEX.0.bsindex where given (diffqe
    enhance: the job's folder, for a resume only), else to ~/bsindex where indexing took long, kept forever."""
    cache = {"cachemode": 4, "cachepath": index} if index else {}
    with tempfile.TemporaryDirectory() as tmp:  # the frame times, which BestSource reads in its index pass
        timecodes = Path(tmp) / "timecodes.txt"
        try:
            clip = vs.core.bs.VideoSource(source=str(source), timecodes=str(timecodes), **cache)
            times = [line for line in timecodes.read_text().splitlines()[1:] if line.strip()]
        except vs.Error as e:  # a stream without timestamps (a raw .hevc): no times (the index is kept by then)
            if "timecode" not in str(e):
                raise
            clip, times = vs.core.bs.VideoSource(source=str(source), **cache), []
    return with_last_duration(clip, [Fraction(t) for t in times[-2:]]), times


def with_last_duration(clip: vs.VideoNode, times_ms: list[Fraction]) -> vs.VideoNode:
    """CLIP with its last frame given the duration of the one before it (TIMES_MS: the last two frames' times; or
    1 / fps): BestSource leaves it without one, and vspipe -t then fails with "missing duration"."""
    last = times_ms[-1] - times_ms[-2] if len(times_ms) > 1 else 1000 / clip.fps if clip.fps else None
    if not last:
        return clip
    seconds = last / 1000
    tail = clip[-1].std.SetFrameProps(_DurationNum=seconds.numerator, _DurationDen=seconds.denominator)
    return tail if clip.num_frames == 1 else clip[:-1] + tail


def drift(times_ms: list[float], fps: Fraction) -> str | None:
    """Where the input's frame times (TIMES_MS, from its first) stray from the constant FPS that vspipe's output
    states by more than half a frame (variable-frame-rate video: phones, screen recordings), how far; else None."""
    if not times_ms or not fps:
        return None
    period_ms = 1000 / float(fps)  # a float: Fraction arithmetic per frame cost 0.36 s for a 2-hour film
    error_ms = max(abs(t - times_ms[0] - i * period_ms) for i, t in enumerate(times_ms))
    if error_ms <= period_ms / 2:
        return None
    return (f"the input's frame rate varies (its frames up to {error_ms:.0f} ms from where a constant {float(fps):g} "
            "frames/s puts them): vspipe's output has that constant rate, so it drifts from the input's audio; "
            "vspipe -t FILE writes the frame times (mkvmerge --timestamps 0:FILE applies them), or diffqe enhance "
            "keeps them")


def alpha_plane(decoded: vs.VideoNode, bits: int) -> vs.VideoNode:
    """The alpha plane that BestSource attaches to each DECODED frame (_Alpha), untouched by the enhancement, at
    BITS per sample: full range, so fully opaque stays fully opaque."""
    alpha = decoded.std.PropToClip("_Alpha")
    depth = alpha.format.bits_per_sample
    if depth == bits:
        return alpha
    scale = ((1 << bits) - 1) / ((1 << depth) - 1)
    return alpha.std.Expr(f"x {scale} *", format=alpha.format.replace(bits_per_sample=bits).id)
