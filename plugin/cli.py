"""`diffqe enhance IN OUT`: vspipe enhance.vpy | ffmpeg, with audio, subtitles, chapters and metadata
taken from IN, colour and bit depth kept, a progress bar on stderr and an atomic rename at the end."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import shlex
import signal
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import ffmpeg

from ..model.config import MAX_STRENGTH
from ..model.files import SHIPPED, SHIPPED_FUSION, package_version, paths as checkpoint_paths
from ..model.mirror import FLIPS
from . import allocator
from .backends import NAMES, best_name
from .encoder import (checked as checked_encoder_options, has_option, own_rate, parse as parse_encoder_options,
                      pixel_formats, sets_rate, split)
from .hdr import dolby_vision, side_data, x265_params
from .mux import FFMPEG_QUIET, MATROSKA, MOV_FAMILY, embedded_left_behind, is_picture, left_behind, mux_command
from .progress import VspipeLog, progress_line, vspipe_reason
from .script import SCRIPT
from .segments import PATTERN, Busy, Segments, job_identity, work_dir
from .timing import frame_times, join


# The options that change the enhanced video: segments made with others are not resumed from.
VIDEO_OPTIONS = ("backend", "checkpoint", "tile", "overlap", "seed", "ensemble", "strength", "temporal", "no_fusion",
                 "no_qp_guard", "bits", "codec", "crf", "preset", "lossless", "encoder_options")
DEFAULT_CRF = 18.0


class UserError(RuntimeError):
    pass


def probe_video(path: Path) -> dict:
    """The first video stream of PATH as ffprobe reports it; a clear error if there is none."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; diffqe enhance takes one video (diffqe batch {path} -o OUTDIR takes "
                        "folders)")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        # absolute: "a:b.mp4" would name a protocol, "-a.mp4" an option
        info = ffmpeg.probe(str(path.absolute()), show_programs=None)
    except ffmpeg.Error as e:
        detail = e.stderr.decode(errors="replace").strip().splitlines()[-1:] if e.stderr else []
        raise UserError(f"{path}: not a readable video ({' '.join(detail) or 'ffprobe failed'})") from None
    video = [s for s in info["streams"] if s.get("codec_type") == "video" and not is_picture(s)]
    if not video:
        raise UserError(f"{path}: has no video stream")
    # A transport stream of several programs (a broadcast multiplex): the others' streams are not this video's.
    programs = info.get("programs", [])
    own = next((p for p in programs if any(s["index"] == video[0]["index"] for s in p["streams"])), None)
    return video[0] | {"format_duration": info.get("format", {}).get("duration"),
                       "format_start": info.get("format", {}).get("start_time"), "input_streams": info["streams"],
                       "program": own if len(programs) > 1 else None}


def check_pixel_format(path: Path, stream: dict) -> None:
    """The model enhances luma: RGB video has none (the filter's own error would name a VapourSynth fix). The
    error gives the conversion that keeps its depth and alpha, with the matrix stated and tagged."""
    name = stream.get("pix_fmt")
    try:
        fmt = av.VideoFormat(name) if name else None
    except ValueError:  # a format PyAV does not know: let the source filter judge it
        return
    if fmt is not None and fmt.is_rgb:
        bits = max(c.bits for c in fmt.components)
        alpha = any(c.is_alpha for c in fmt.components)
        depths = (8, 10, 16) if alpha else (8, 10, 12, 16)  # what FFV1 writes at 4:4:4
        depth = next(d for d in depths if d >= bits)
        target = f"yuv{'a' if alpha else ''}444p{'' if depth == 8 else f'{depth}le'}"
        converted = shlex.quote(str(path.with_name(f"{path.stem}_yuv.mkv")))
        raise UserError(f"{path}: RGB video ({name}); DiffQE enhances the luma of YUV or gray video. Convert it "
                        f"first (BT.709, {depth}-bit 4:4:4{' with alpha' if alpha else ''}, FFV1 lossless): ffmpeg -i "
                        f"{shlex.quote(str(path))} -vf scale=out_color_matrix=bt709 -colorspace bt709 -pix_fmt {target} "
                        f"-c:v ffv1 {converted}")


def check_dolby_vision(src: Path, stream: dict) -> None:
    """The re-encode drops Dolby Vision metadata: refuse a stream whose base layer shows right only with it
    (profile 5); `losses` says what the others become."""
    if (vision := dolby_vision(stream)) and vision[1] is None:
        raise UserError(f"{src} is Dolby Vision profile {vision[0]}: its pictures are in Dolby's own colour space "
                        "and show right only with its Dolby Vision metadata, which the re-encoded video cannot "
                        "carry; DiffQE does not enhance it")


def encoder_name(args: argparse.Namespace) -> str:
    """The ffmpeg encoder the job writes with: FFV1 for --lossless, else --codec."""
    return "ffv1" if args.lossless else args.codec


def user_options(args: argparse.Namespace) -> dict[str, str]:
    """--encoder-options as ffmpeg options (parse_enhance has checked them)."""
    return parse_encoder_options(args.encoder_options or "")


GRAY_WITH_ALPHA = {"ya8": "gray", "ya16le": "gray16le", "ya16be": "gray16le"}  # -> the same without alpha
SIDE_ALPHA = MATROSKA | {".webm"}  # where VP8/VP9's alpha (a second stream, in BlockAdditions) is held


def keeps_alpha(stream: dict, args: argparse.Namespace, dst: Path) -> bool:
    """Whether the input's alpha plane (ProRes 4444, FFV1: a yuva format, which BestSource attaches to each frame
    as _Alpha) goes into DST: where the encoder writes YUV with alpha (FFV1, ProRes 4444, VP8/VP9, whose alpha
    is a second stream that only Matroska and WebM hold)."""
    encoder = encoder_name(args)
    if encoder.startswith("libvpx") and dst.suffix.lower() not in SIDE_ALPHA:
        return False
    return stream.get("pix_fmt", "").startswith("yuva") and any(
        name.startswith("yuva") for name in pixel_formats(encoder))


def alpha_loss(stream: dict, args: argparse.Namespace, dst: Path) -> str | None:
    """How DST loses the input's alpha channel (transparency), for a warning; None where it keeps it or there is
    none."""
    name = stream.get("pix_fmt", "")
    if name in GRAY_WITH_ALPHA:  # vspipe's Matroska carries alpha beside YUV only
        return f"its alpha channel (transparency), which DiffQE keeps beside YUV video only; {dst} is opaque"
    if name.startswith("yuva"):
        if stream["keep_alpha"]:
            return None
        why, fix = (("VP8/VP9 keep in .webm or .mkv only", "name it .webm or .mkv to keep it")
                    if args.codec.startswith("libvpx") else  # (--lossless keeps it: FFV1 writes alpha)
                    (f"{args.codec} does not write", "--lossless or --codec prores_ks keeps it"))
        return f"its alpha channel (transparency), which {why}; {dst} is opaque ({fix})"
    if any(key.lower() == "alpha_mode" and value == "1" for key, value in stream.get("tags", {}).items()):
        # WebM's VP8/VP9 alpha: a second bitstream beside the video, which ffmpeg's own decoders do not read
        return (f"its alpha channel (transparency, a VP8/VP9 alpha stream beside the video), which the source "
                f"filter does not decode; {dst} is opaque")
    return None


def losses(dst: Path, stream: dict, side: list[dict], args: argparse.Namespace) -> list[str]:
    """What DST will not have of the input, each for a warning: Dolby Vision metadata, what the video carries in
    its frames (SIDE: its side data), HDR10 metadata that only x265 writes, streams DST's container cannot hold."""
    lost = []
    if vision := dolby_vision(stream):
        lost.append(f"Dolby Vision profile {vision[0]}: the re-encoded video does not carry its Dolby Vision "
                    f"metadata, so {dst} is its {vision[1]} base layer")
    lost += [f"its video carries {carried}" for carried in embedded_left_behind(side, stream)]
    if alpha := alpha_loss(stream, args, dst):
        lost.append(alpha)
    if stream["x265_hdr10"] and (args.lossless or args.codec != "libx265"):
        lost.append(f"HDR10 mastering metadata, which only --codec libx265 writes; {dst} keeps the colour tags but "
                    "not this metadata")
    lost += [f"{what}; {dst} will not have it" for what in left_behind(stream["input_streams"], stream, dst)]
    return lost


def frame_rate(stream: dict) -> float | None:
    """The stream's average frames per second as ffprobe states it; None where it states none ("0/0")."""
    num, _, den = str(stream.get("avg_frame_rate", "0/1")).partition("/")
    return float(num) / float(den) if float(den or 0) and float(num or 0) else None


def frame_count(stream: dict) -> int | None:
    if str(stream.get("nb_frames", "")).isdigit():
        return int(stream["nb_frames"])
    duration = float(stream.get("duration") or stream.get("format_duration") or 0)
    rate = frame_rate(stream)
    return round(duration * rate) if duration and rate else None


FIELD_FIRST = {"tt": "tff", "tb": "tff", "bb": "bff", "bt": "bff"}  # ffprobe's field_order -> setfield's mode


def frame_tags(video: ffmpeg.nodes.FilterableStream, stream: dict) -> ffmpeg.nodes.FilterableStream:
    """VIDEO's frames with the input's sample aspect ratio and field order: vspipe's y4m header states neither
    (it says progressive, aspect unknown), so anamorphic video would play at the wrong shape and interlaced
    video would not be deinterlaced."""
    num, _, den = str(stream.get("sample_aspect_ratio", "")).partition(":")
    if num.isdigit() and den.isdigit() and int(num) and int(den):
        video = video.filter("setsar", f"{num}/{den}")
    if order := FIELD_FIRST.get(stream.get("field_order", "")):
        video = video.filter("setfield", order)
    return video


def sampling(pix_fmt: str) -> tuple[int, str | None]:
    """PIX_FMT's bits per luma sample and its chroma subsampling ("444", "422", "420"; None for grey), as PyAV
    states them (ValueError for a format it does not know)."""
    luma, *chroma = av.VideoFormat(pix_fmt, 16, 16).components
    if not chroma:
        return luma.bits, None
    # PyAV states the chroma planes' size for a 16x16 frame: 16 wide is 4:4:4, 8 wide and 8 high 4:2:0.
    return luma.bits, "444" if chroma[0].width == 16 else "420" if chroma[0].height == 8 else "422"


def output_pix_fmt(stream: dict, bits: int | None) -> str:
    """The enhanced video's pixel format: the input's (without its alpha plane unless STREAM's "keep_alpha"), or
    its layout (gray, 4:2:0, 4:2:2, 4:4:4, with alpha) at BITS per sample (--bits)."""
    name = stream.get("pix_fmt", "yuv420p")
    alpha = name.startswith("yuva") and stream.get("keep_alpha", False)
    if name.startswith("yuva") and not alpha:
        name = "yuv" + name.removeprefix("yuva")
    name = GRAY_WITH_ALPHA.get(name, name)
    if bits is None:
        return name
    try:
        depth, subsampling = sampling(name)
    except ValueError:
        raise UserError(f"--bits {bits}: the input's pixel format {name} is unknown to PyAV; leave --bits "
                        "out") from None
    if bits < depth:
        raise UserError(f"--bits {bits}: the input is {depth}-bit ({name}); the output keeps at least its depth")
    if bits == depth:
        return name
    layout = f"yuv{'a' if alpha else ''}{subsampling}p" if subsampling else "gray"
    deeper = f"{layout}{bits}le"
    try:
        av.VideoFormat(deeper)
    except ValueError:
        raise UserError(f"--bits {bits}: ffmpeg has no {layout} format of that depth; use 10, 12 or 16") from None
    return deeper


def dnxhr_profile(pix_fmt: str) -> str:
    """The DNxHR profile --codec dnxhd writes where the user names none: DNxHD's own take only broadcast frame sizes
    at fixed rates, DNxHR's any size; HQ (as prores_ks's default) at 8 bits, HQX above, 444 for 4:4:4 (ffmpeg
    takes PIX_FMT up to the 4:2:2 or 4:4:4 format of the depth that dnxhd codes)."""
    depth, subsampling = sampling(pix_fmt)
    if subsampling == "444":
        return "dnxhr_444"
    return "dnxhr_hqx" if depth > 8 else "dnxhr_hq"


def encoder_options(stream: dict, args: argparse.Namespace) -> dict:
    """ffmpeg's output options for the enhanced video: the encoder, and the input's pixel format, colour tags
    and field order (frame_tags marks the frames; this keeps ffmpeg from restating the order as "tb"); then the
    user's --encoder-options, which win (a colour tag given for an untagged input, say)."""
    extra = user_options(args)
    options: dict = {"pix_fmt": output_pix_fmt(stream, args.bits)}
    for key, tag in (("color_range", "color_range"), ("color_primaries", "color_primaries"),
                     ("color_trc", "color_transfer"), ("colorspace", "color_space")):
        if stream.get(tag) and stream[tag] != "unknown":
            options[key] = stream[tag]
    interlaced = stream.get("field_order") in FIELD_FIRST
    if interlaced:
        options["field_order"] = stream["field_order"]
    if args.lossless:
        return options | {"c:v": "ffv1", "level": 3} | extra
    options["c:v"] = args.codec
    if args.preset is not None:
        options["preset"] = args.preset
    # the default CRF where the encoder has one, unless the user's bitrate or quantiser replaces it
    if args.crf is not None or (not sets_rate(extra) and has_option(args.codec, "crf")):
        options["crf"] = DEFAULT_CRF if args.crf is None else args.crf
    if args.codec == "dnxhd" and not any(key.partition(":")[0] == "profile" for key in extra):
        options["profile"] = dnxhr_profile(options["pix_fmt"])
    if interlaced and args.codec == "libx264":  # x264 codes the fields as fields (x265 and others: frames, tagged)
        options["flags"] = "+ildct+ilme"
    if args.codec == "libx265":  # the user's x265 parameters after DiffQE's (quiet log, HDR10 metadata)
        params = ["log-level=error", *stream.get("x265_hdr10", []), extra.pop("x265-params", "")]
        options["x265-params"] = ":".join(filter(None, params))
    return options | extra


def ffmpeg_failed(returncode: int, stderr: str) -> bool:
    """Whether an ffmpeg run failed.  ffmpeg 5 reports a failed write of a file's end (a full disk) and still
    exits 0, which would pass a truncated file as complete; -xerror would make it exit 1, but would also end a
    stream copy at the first out-of-order timestamp in the input's audio, which ffmpeg otherwise mends."""
    return bool(returncode) or "Error writing trailer" in stderr or "Error closing file" in stderr


def encode_command(stream: dict, args: argparse.Namespace, segments: Segments, start: int,
                   total: int | None) -> list[str]:
    """The enhanced video from the pipe (clip frames START on), encoded into SEGMENTS; progress on stdout."""
    remaining = None if total is None else total - start
    options = split(encoder_options(stream, args))[0] | segments.muxer_options(start, remaining, encoder_name(args))
    pattern = f"{str(segments.folder).replace('%', '%%')}/{PATTERN}"  # a '%' in the path is not a field
    # vspipe's Matroska carries the alpha plane, which its y4m cannot
    video = frame_tags(ffmpeg.input("pipe:", format="matroska" if stream.get("keep_alpha") else "yuv4mpegpipe"),
                       stream)
    cmd = ffmpeg.output(video, pattern, **options).compile()
    return cmd[:1] + FFMPEG_QUIET + ["-progress", "pipe:1", "-nostats"] + cmd[1:]


def _hint(stderr: str) -> str:
    """How to fix what ffmpeg's STDERR says went wrong, where this module knows."""
    if "Could not write header" in stderr or "not supported in container" in stderr:
        return ("; the output's container cannot hold the encoded video or a stream copied from the input: write "
                ".mkv, which holds any")
    if "Unable to find a suitable output format" in stderr:
        return "; ffmpeg knows no file format by the output's suffix: name it .mkv, .mp4 or .mov"
    if "No space left on device" in stderr:
        return "; " + DISK_FULL
    return ""


DISK_FULL = ("the disk that holds the output is full: free space on it (or write the output elsewhere) and run the "
             "same command again; it resumes from the complete segments")


def _written_codec(path: Path) -> str | None:
    """The codec of PATH's first video stream as ffprobe reads it back; None where it reads no video."""
    try:
        return probe_video(path).get("codec_name")
    except UserError:
        return None


def black_frame(stream: dict, more: str = "") -> ffmpeg.nodes.FilterableStream:
    """A black picture of STREAM's size (encoders refuse sizes: DNxHR's below 256x120, 4:2:0 odd ones), as an input
    to check the encoder and the container on; MORE: further options of lavfi's color source."""
    return ffmpeg.input(f"color=c=black:s={stream.get('width') or 256}x{stream.get('height') or 256}{more}",
                        format="lavfi")


def check_container(src: Path, dst: Path, stream: dict, args: argparse.Namespace, folder: Path) -> None:
    """Write one encoded black frame as the job writes its video (a Matroska segment, joined, then copied beside
    SRC's other streams) into a file of DST's kind, so that what DST's container cannot hold (PCM audio in MP4,
    ...) or the join cannot pass fails now, not after the whole video has been enhanced."""
    segment, joined, probe = folder / "check.mkv", folder / "check_joined.mkv", folder / f"check{dst.suffix}"
    encode = ffmpeg.output(black_frame(stream, ":d=0.04"), str(segment), **split(encoder_options(stream, args))[0])
    cmd = encode.compile()
    done = subprocess.run(cmd[:1] + FFMPEG_QUIET + ["-y"] + cmd[1:], capture_output=True, text=True)
    if not ffmpeg_failed(done.returncode, done.stderr):
        try:
            joined = join([segment], None, joined)[0]
        except (ValueError, av.error.FFmpegError) as e:  # a codec that none of the join's containers take
            raise UserError(f"writing {dst} failed: {e}; choose another --codec") from None
        options = {"c:v": "copy"} | muxer_options(args, dst, stream)
        done = subprocess.run(mux_command(ffmpeg.input(str(joined)), src, stream, probe, options, folder),
                              capture_output=True, text=True)
    failed = ffmpeg_failed(done.returncode, done.stderr)
    written = None if failed else _written_codec(probe)
    for path in (segment, joined, probe):
        path.unlink(missing_ok=True)
    if failed:
        raise UserError(f"writing {dst} failed: {first_lines(done.stderr)}{_hint(done.stderr)}")
    # Some muxers take a stream they cannot hold and write something else: HEVC into .avi (no codec tag) or
    # into an image name (.jpg), which then does not read back as video.
    if (expected := coded_as(args)) is None:  # an encoder of the system's ffmpeg that PyAV's own build lacks
        return
    if written != expected:
        raise UserError(f"{dst}: a {dst.suffix} file does not hold {expected} video (written, it reads back as "
                        f"{written or 'no video'}); name the output .mkv, .mp4 or .mov")


def first_lines(stderr: str, n: int = 2) -> str:
    """ffmpeg's first N lines of complaint, which name the cause (its last ones only say that it stopped)."""
    return " / ".join([ln.strip() for ln in stderr.splitlines() if ln.strip()][:n]) or "no message"


# ffmpeg's and the encoders' warnings for an option they pass over (a typo in a long job's settings)
IGNORED = re.compile(r"has not been used for any stream|Unknown option|Invalid value for|Error parsing option")


def check_encoder(stream: dict, args: argparse.Namespace) -> None:
    """Open the encoder as the job will, on one black frame, so that a wrong --codec, --crf, --preset or
    --encoder-options fails at once with the encoder's own words, not after the model has run (or for every file
    of a batch); so does an option that the encoder would pass over with a warning."""
    frame = black_frame(stream)
    options = split(encoder_options(stream, args))[0]
    cmd = ffmpeg.output(frame, "-", format="null", vframes=1, **options).compile()
    done = subprocess.run(cmd[:1] + ["-hide_banner", "-nostdin", "-v", "warning"] + cmd[1:], capture_output=True,
                          text=True)
    ignored = [ln.split(". The most likely reason")[0].strip() for ln in done.stderr.splitlines() if IGNORED.search(ln)]
    if done.returncode or ignored:
        chosen = "--lossless (FFV1)" if args.lossless else f"--codec {args.codec}"
        chosen += "" if args.preset is None else f" --preset {args.preset}"
        chosen += "" if args.crf is None else f" --crf {args.crf:g}"
        chosen += f" --encoder-options {shlex.quote(args.encoder_options)}" if args.encoder_options else ""
        said = ignored[0] if ignored and not done.returncode else first_lines(done.stderr)
        if unused := re.match(r"Codec AVOption (\S+)", said):
            codec = encoder_name(args)
            said += f"; {codec} has no -{unused.group(1)} option (ffmpeg -h encoder={codec} lists those it has)"
        raise UserError(f"ffmpeg cannot encode the output with {chosen} at pixel format {options['pix_fmt']}: "
                        f"{said}")


def partial_path(dst: Path) -> Path:
    """Where DST is written until it is complete: hidden, beside it, same extension (so ffmpeg's muxer fits)."""
    return dst.with_name(f".{dst.stem}.partial{dst.suffix}")


def is_partial(path: Path) -> bool:
    """Whether PATH is a ``partial_path`` or a ``work_dir``: what a stopped job left unfinished."""
    return re.fullmatch(r"\..+\.partial(\.[^.]+)?(\.d)?", path.name) is not None


def run_enhance(args: argparse.Namespace) -> int:
    # Absolute paths for ffmpeg and PyAV, which take a relative "a:b.mkv" for a protocol and "-a.mkv" for an option.
    src, dst = Path(args.input).absolute(), Path(args.output).absolute()
    if src.resolve() == dst.resolve():
        raise UserError("the output must not be the input: DiffQE never overwrites its input")
    if dst.exists() and not args.overwrite:
        raise UserError(f"{dst} exists; pass --overwrite to replace it")
    if not dst.suffix:
        raise UserError(f"{dst}: give the output a video container's suffix (.mkv, .mp4, .mov): it names the format")
    stream = probe_video(src)
    check_pixel_format(src, stream)
    check_dolby_vision(src, stream)
    side = side_data(src, stream)
    stream["x265_hdr10"] = x265_params(side)
    stream["keep_alpha"] = keeps_alpha(stream, args, dst)
    for lost in losses(dst, stream, side, args):
        print(f"warning: {src}: {lost}", file=sys.stderr)
    if not args.lossless and not sets_rate(user_options(args)) and (note := own_rate(args.codec)):
        print(f"warning: {note}", file=sys.stderr)
    total = frame_count(stream)
    for tool in ("vspipe", "ffmpeg"):
        if not shutil.which(tool):
            raise UserError(f"{tool} is not on PATH; run 'bash scripts/demo.sh' once, or install it")
    check_encoder(stream, args)
    dst.parent.mkdir(parents=True, exist_ok=True)
    weights = checkpoint_paths(Path(args.checkpoint) if args.checkpoint else SHIPPED)[0]
    if not weights.is_file():
        raise UserError(f"{weights}: no such weights file (--checkpoint takes the stem of NAME.safetensors)")
    # The backend by name: a job resumed on another kind of machine (a farm's other node) would otherwise mix
    # segments of two backends, whose frames differ by rounding; named, it starts afresh there.
    args.backend = args.backend or best_name()
    if args.progress == "json":  # for a farm's log (and diffqe batch's report): what ran where
        print(json.dumps({"stage": "start", "backend": args.backend, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}),
              file=sys.stderr, flush=True)
    options = {key: getattr(args, key) for key in VIDEO_OPTIONS}
    used = [weights] + ([] if args.no_fusion or not args.temporal else [SHIPPED_FUSION.with_suffix(".safetensors")])
    try:
        segments, resumed = Segments.open(work_dir(dst), job_identity(src, used, options),
                                          segment_length(stream, args.segment_seconds))
    except Busy:
        raise UserError(f"{dst} is being written by another diffqe enhance (it holds {work_dir(dst)}): wait for "
                        "it to finish, or stop it and run this command again to resume, or choose another "
                        "output") from None
    partial = partial_path(dst)
    try:
        check_container(src, dst, stream, args, segments.folder)
        kept = len(segments.done())
        start = kept * segments.frames
        if resumed:
            print(f"{'joining' if segments.encoded else f'resuming from frame {start}:'} {kept} segments kept in "
                  f"{segments.folder}", file=sys.stderr)
        if not segments.encoded and (total is None or start < total):
            _encode(src, stream, segments, start, total, args)
        segments.mark_encoded()
        done = _join(src, dst, stream, partial, segments, muxer_options(args, dst, stream))
    except BaseException:
        partial.unlink(missing_ok=True)  # nothing half-written survives a failure or an interrupt ...
        segments.tidy()  # ... but every complete segment does: the same command resumes from them
        if complete := segments.done():
            print(f"kept {len(complete)} complete segments in {segments.folder}; run the same command again to "
                  "resume", file=sys.stderr)
        else:
            shutil.rmtree(segments.folder, ignore_errors=True)
        raise
    os.replace(partial, dst)
    shutil.rmtree(segments.folder, ignore_errors=True)
    print(f"wrote {dst} ({done} frames)", file=sys.stderr)
    return 0


def segment_length(stream: dict, seconds: float) -> int:
    """Frames per segment: SECONDS of the input at its frame rate (25 frames/s where it states none)."""
    return max(1, round(seconds * (frame_rate(stream) or 25.0)))


def _encode(src: Path, stream: dict, segments: Segments, start: int, total: int | None,
            args: argparse.Namespace) -> None:
    """vspipe (from clip frame START) | ffmpeg into the next segments, with a progress bar on stderr."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        script = Path(tmp) / "enhance.vpy"
        script.write_text(SCRIPT)
        # vspipe runs the script with its folder (a temporary one) as the working directory: paths go absolute.
        vs_args = ["-s", str(start), "-a", f"input={src.resolve()}", "-a", f"seed={args.seed}",
                   "-a", f"overlap={args.overlap}", "-a", f"ensemble={args.ensemble}",
                   "-a", f"strength={args.strength}", "-a", f"temporal={args.temporal}",
                   "-a", f"fusion={int(not args.no_fusion)}", "-a", f"qp_guard={int(not args.no_qp_guard)}",
                   "-a", f"index={segments.folder / 'source'}"]
        if args.checkpoint:
            vs_args += ["-a", f"checkpoint={Path(args.checkpoint).resolve()}"]
        for key in ("backend", "tile", "bits"):
            if getattr(args, key):
                vs_args += ["-a", f"{key}={getattr(args, key)}"]
        container = "y4m"
        if stream["keep_alpha"]:  # vspipe's Matroska carries the alpha plane, which its y4m cannot
            vs_args += ["-a", "alpha=1"]
            container = "mkv"
        pipe = subprocess.Popen(["vspipe", "-c", container, *vs_args, str(script), "-"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=allocator.environment())
        enc = subprocess.Popen(encode_command(stream, args, segments, start, total), stdin=pipe.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pipe.stdout.close()
        stack.callback(lambda: [p.kill() for p in (pipe, enc) if p.poll() is None])  # on interrupt or error
        vs_log = VspipeLog(pipe.stderr, src.name, args.progress)
        vs_log.start()
        done = start
        for line in enc.stdout:
            if line.startswith("frame="):
                done = start + int(line.split("=", 1)[1])
                if args.progress != "none":  # of the frames, the index's exact count where the script gave it
                    print(progress_line(done - start, done, vs_log.frames or total, vs_log.indexed, args.progress),
                          end="", file=sys.stderr, flush=True)
        enc_err = enc.stderr.read()
        vs_rc, enc_rc = pipe.wait(), enc.wait()
        vs_log.join()
        if args.progress == "bar" and (done > start or vs_log.indexed > vs_log.launched):
            print(file=sys.stderr)  # end the progress line
        if vs_rc or ffmpeg_failed(enc_rc, enc_err):
            if reason := vspipe_reason("".join(vs_log.lines)):
                raise UserError(f"enhancing {src} failed: {reason}")
            raise UserError(f"encoding the enhanced video of {src} failed: {first_lines(enc_err)}{_hint(enc_err)}")
    # Whatever ffmpeg's exit status says, every frame it encoded must be in a complete segment before the job
    # counts as encoded: the join would otherwise write a short video as the whole.
    held = sum(map(segments.count, segments.done(encoded=True)))
    if held != done:
        raise UserError(f"encoding the enhanced video of {src} failed: the encoder took frames up to {done} but "
                        f"the complete segments in {segments.folder} hold {held} "
                        f"({first_lines(enc_err)}{_hint(enc_err)})")


def coded_as(args: argparse.Namespace) -> str | None:
    """The codec the chosen encoder writes ("hevc" for libx265 and hevc_nvenc); None where PyAV's own ffmpeg lacks
    the encoder."""
    try:
        return av.codec.Codec(encoder_name(args), "w").canonical_name
    except ValueError:
        return None


FRAME_TIMED = (".mxf", ".avi")  # containers whose video time base is its frame's time


def muxer_options(args: argparse.Namespace, dst: Path, stream: dict) -> dict:
    """Options for DST's muxer: those of --encoder-options (-movflags +faststart), for HEVC in MP4 or QuickTime
    the 'hvc1' sample entry, which Apple's players need (ffmpeg writes 'hev1', which they do not play; the
    encoder's parameter sets are in the sample entry, as 'hvc1' asks), H.264 in AVI as start codes, and for MXF
    and AVI the video's time base at STREAM's frame rate: they state their rate as that, which a stream copy would
    take from the joined video (1/1000 s, QuickTime's timescale, or half the frame's time), a rate MXF refuses and
    AVI fills with empty frames."""
    options = {}
    for key, value in split(user_options(args))[1].items():
        options["tag:v:0" if key.startswith("tag") else key] = value  # the enhanced video's, not a cover picture's
    if dst.suffix.lower() in MOV_FAMILY and coded_as(args) == "hevc":
        options.setdefault("tag:v:0", "hvc1")
    if dst.suffix.lower() == ".avi" and coded_as(args) == "h264":
        # AVI holds start codes; the joined Matroska video has length prefixes (ffmpeg converts them itself for MPEG-TS)
        options["bsf:v:0"] = "h264_mp4toannexb"
    if dst.suffix.lower() in FRAME_TIMED and frame_rate(stream):
        options["time_base:v:0"] = str(1 / Fraction(stream["avg_frame_rate"]))
    return options


def _join(src: Path, dst: Path, stream: dict, partial: Path, segments: Segments, muxer: dict) -> int:
    """The segments, on SRC's own frame times (plugin.timing), with SRC's other streams into PARTIAL, written
    with MUXER's options; returns the number of frames."""
    start = Fraction(stream.get("format_start") or 0)
    times = frame_times(src, start, sum(map(segments.count, segments.done())))
    video = segments.folder / "video.mkv"
    video, frames, first = join(segments.done(), times, video)
    # ffmpeg moves each input's first timestamp to zero: the offset puts the video back at its first frame's time.
    source = ffmpeg.input(str(video), itsoffset=f"{float(first):.6f}")
    options = {"c:v": "copy"} | muxer
    if stream["keep_alpha"] and dst.suffix.lower() in SIDE_ALPHA:
        # Matroska's AlphaMode flag, which players (browsers) need to read a VP8/VP9 alpha stream; a stream copy
        # does not set it
        options["metadata:s:v:0"] = "alpha_mode=1"
    cmd = mux_command(source, src, stream, partial, options, segments.folder)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if ffmpeg_failed(done.returncode, done.stderr):
        raise UserError(f"writing {dst} failed: {first_lines(done.stderr)}{_hint(done.stderr)}")
    return frames


def parse_enhance(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="diffqe", description="DiffQE: blind-QP enhancement of HEVC video",
                                 epilog="diffqe batch INPUTS... -o OUTDIR: many files at once (diffqe batch --help)")
    ap.add_argument("--version", action="version", version=f"diffqe {package_version()}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enhance", help="enhance IN and write OUT (audio, subtitles, metadata kept)")
    sub.add_parser("batch", help="many files, resumable, on Ray (see diffqe batch --help)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--backend", choices=tuple(NAMES), help="(default: the best available here)")
    p.add_argument("--checkpoint", help="weights stem (default: shipped)")
    p.add_argument("--tile", type=int, help="decode in tiles of this size")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, choices=tuple(FLIPS), default=1,
                   help="average over this many mirrored copies of each frame (slower; spares high-quality input)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="scale the model's correction, 0 to 2 (default 1; lower for sources that were clean or soft)")
    p.add_argument("--temporal", type=int, default=2, metavar="RADIUS",
                   help="stabilise static regions over this many frames either side (default 2; 0: off)")
    p.add_argument("--no-fusion", action="store_true",
                   help="do not fuse neighbouring intra-coded frames (the fusion works on all-intra streams only)")
    p.add_argument("--no-qp-guard", action="store_true",
                   help="give frames coded finer than QP 17 all of the correction (by default it fades out down to "
                   "QP 9, read from H.264, HEVC, AV1, VP9, VP8 or MPEG-2 headers, where the model would harm "
                   "near-transparent video)")
    p.add_argument("--bits", type=int, metavar="DEPTH",
                   help="write the video at this bit depth (default: the input's); 10 keeps the model's finer "
                   "corrections of 8-bit sources (x265 Main10)")
    p.add_argument("--codec", default="libx265", help="ffmpeg video encoder (default libx265)")
    p.add_argument("--crf", type=float, help=f"encoder CRF (default {DEFAULT_CRF:g}: visually transparent)")
    p.add_argument("--preset", help="encoder preset (default: the encoder's own, medium for x264 and x265)")
    p.add_argument("--encoder-options", type=checked_encoder_options, metavar="OPTIONS",
                   help="more ffmpeg options for the video encoder, in one quoted string: '-tune grain -x265-params "
                   "aq-mode=3', '-b:v 8M -maxrate 10M -bufsize 16M' (a bitrate or quantiser replaces the default "
                   "CRF), '-color_primaries bt709' for an untagged input, '-movflags +faststart' for .mp4")
    p.add_argument("--lossless", action="store_true", help="FFV1 lossless video instead of --codec")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never IN)")
    p.add_argument("--segment-seconds", type=float, default=60, metavar="SECONDS",
                   help="write the video in segments of this length, each kept when complete, so that a stopped "
                   "job resumes from the last one (default 60)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                   help="progress on stderr: a bar, JSON lines for farms, or none")
    p.add_argument("--quiet", action="store_true", help="same as --progress none")
    args = ap.parse_args(argv)
    if args.temporal < 0:
        p.error(f"--temporal: a radius in frames, >= 0 (got {args.temporal})")
    if not 0 <= args.strength <= MAX_STRENGTH:
        p.error(f"--strength: between 0 and {MAX_STRENGTH} (got {args.strength})")
    if args.bits is not None and not 8 <= args.bits <= 16:
        p.error(f"--bits: a depth from 8 to 16 (got {args.bits})")
    if args.segment_seconds <= 0:
        p.error(f"--segment-seconds: a length in seconds, > 0 (got {args.segment_seconds})")
    extra = user_options(args)
    if args.crf is not None and sets_rate(extra):
        p.error("--crf and a bitrate or quantiser in --encoder-options: give one of them")
    if args.lossless and "g" in extra:
        p.error("--encoder-options -g with --lossless: FFV1's keyframes follow --segment-seconds, where a "
                "stopped job resumes")
    if args.quiet:
        args.progress = "none"
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # SIGTERM (a farm's scheduler) unwinds like Ctrl-C, so partial outputs are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if argv[:1] == ["batch"]:
            from .batch import main as batch_main

            return batch_main(argv[1:])
        return run_enhance(parse_enhance(argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, a file where a folder must be, a full disk)
        print(f"error: {e}" + (f"; {DISK_FULL}" if e.errno == errno.ENOSPC else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
