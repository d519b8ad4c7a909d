"""The QP each frame of a source was coded at, read from its headers, and the guard that fades the model's
correction out on near-transparent frames.

The model is trained on pictures coded at slice QP 19 and coarser (x265 --qp 22-42: intra pictures 3 below) and,
blind to the QP, corrects finer ones just as hard: held-out photos and screens lose up to 2.5 dB at slice QP 9
(docs/results.md, "The source-QP guard").  The bitstream states what the model cannot see, so where it is
at hand each frame's correction is scaled by ``guard(qp)`` of its group of pictures' QP (``gop_qps``): whole from
QP 17 up, none at QP 9 and below, linear between, the strengths measured best at each QP.  H.264 and HEVC state
QPs on one scale (H.264's keyframes are read down to their macroblocks, where adaptive quantisation puts the
texture; HEVC pictures that later ones copy are taken finer, as x265's cutree codes them); AV1's, VP9's and VP8's
quantiser indices and MPEG-2's quantiser scales are read as the HEVC QP of the same step, ProRes and DNxHR by their
profile.  Sources without any (other codecs, raw images) are enhanced as before."""

from __future__ import annotations

import bisect
import functools
import math
import re
import statistics
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import ffmpeg
import numpy as np

from . import vp8

CODECS = ("h264", "hevc", "av1", "vp9", "vp8", "mpeg2video")
# Codecs the guard does not read whose sources the model was measured not to harm when fine: Motion JPEG gained at
# every qscale from 1 (50 dB) to 12 on the held-out pictures, no source losing more than 0.032 dB (docs/results.md,
# "Sources of other codecs"); a job says nothing of them.
UNREAD_UNHARMED = ("mjpeg",)
FULL_QP, NO_QP = 17, 9  # the guard's ends: the correction whole at FULL_QP and above, none at NO_QP and below
# Intermediates state no quantiser, but their profile says how finely they code, and reads as the QP whose guard share
# suits it.  Through the model on the held-out pictures (docs/results.md, "Sources of other codecs"): ProRes at 10
# bits, Proxy (39.8 dB in) +0.31 dB, no source harmed; LT (49.0) +0.02 but a screenshot -2.94 (-0.28 at strength
# 0.25); 422 -1.34; HQ -5.04.  DNxHR, Proxy's peer LB (39.6) +0.28, none harmed; SQ (49.3) +0.24 but a screen -0.55,
# at strength 0.5 +0.10 and -0.06, the guard's bar (so QP 13, its 0.5); HQ (53.0) -0.14, the screen -1.66.  The profiles
# not listed (finer ones, and DNxHD's fixed rates, unmeasured, nearly all finer than LB) read NO_QP: spared.
INTERMEDIATE_QPS = {"prores": {"Proxy": FULL_QP}, "dnxhd": {"DNXHR LB": FULL_QP, "DNXHR SQ": 13}}
# x265's cutree (at a CRF or bitrate, its default) codes a block finer the more later pictures copy it, below the
# slice QP: by a strength in QPs per doubling of 1 + the share of it that the pictures within its lookahead inherit,
# each copying COPIED of what the one before it showed.  x265's own strength is 5 (1 - qcomp); CUTREE_PER_QCOMP
# 5.5 (2.2 at x265's default qcomp 0.6) codes a still's keyframe 7.9 QPs finer with 11 pictures after it, as
# measured (6.3-9.2 over six pictures), and 9.7 with 20 or more (8.0-10.7).  Calibrated with the copied share
# 1 - COPIED_PER_BYTE x (the mean new bytes of the group's later pictures / its keyframe's bytes) against the
# all-intra QP that codes as finely, on 6 pictures held, scrolled, and held then scrolled, and 5 moving clips, at
# x265 CRF 10-22 (docs/results.md, "Scrolled screens")
CUTREE_PER_QCOMP, COPIED_PER_BYTE = 5.5, 2.0
# What a picture that only copies its references may cost (its headers and a skip flag per block), with a margin:
# still video's later pictures measured at most 55, 43, 58, 247 and 447 bytes at 200x120, 320x192, 640x360,
# 1920x1080 and 3840x2160 (x265, x264 but for its first P picture, libvpx, SVT-AV1); bytes beyond it are what a
# picture brings anew.  Counted whole, a long still group's headers outweigh its keyframe (a screen held for 250
# pictures of 44 bytes after an 8 kB keyframe)
COPY_BYTES, COPY_BYTES_PER_PIXEL = 64, 1 / 8192

# trace_headers logs each syntax element as "<bit position> <name> <bits> = <value>"; only these are needed:
# H.264 and HEVC a picture parameter set's id and initial QP (and HEVC's whether its blocks may depart from the
# slice QP), and a slice header's parameter set and QP delta, HEVC's after its NAL unit's type (which says
# whether later pictures may copy the picture);
# AV1/VP9 a frame header's quantiser index; MPEG-2 a picture's quantiser scale type and its slices' codes.
_FIELD = re.compile(rb"\b((?:pps_|slice_)?pic_parameter_set_id|(?:pic_)?init_qp_minus26|slice_qp_delta|base_q_idx|"
                    rb"q_scale_type|quantiser_scale_code|cu_qp_delta_enabled_flag|nal_unit_type)\s+\S+ = (-?\d+)")
# MPEG-2's quantiser matrix weights its coefficients' steps by 8-83 sixteenths (default intra matrix, mean 33); 40
# makes its fine quantisers read as the HEVC QP that codes a picture to the same PSNR (within 1.2 dB, test_source_qp):
# step for step, MPEG-2 (no intra prediction, no deblocking) codes coarser than HEVC
MPEG2_WEIGHT = 40
_PACKET = re.compile(rb"\bPacket: (\d+) bytes(, key frame)?.*?(?:, pts (-?\d+)|, no pts)")


class Cutree(NamedTuple):
    """x265's cutree as an encode ran it: how many QPs finer per doubling of 1 + what later pictures inherit of a
    block, and over how many pictures ahead (its rc-lookahead)."""

    strength: float
    frames: int


MEDIUM = Cutree(CUTREE_PER_QCOMP * (1 - 0.6), 20)  # x265's defaults (preset medium), where a stream does not say
# The options x265 writes as text into its first picture (an SEI message), unless run with info=0
_X265_OPTIONS = re.compile(rb"x265 \(build [ -~]*? options: ([ -~]*)")


class Packet(NamedTuple):
    """One packet of a video stream as ``packet_qps`` reads it."""

    pts: int | None
    key: bool
    qp: float  # the mean QP of its slices or frames, on HEVC's scale
    size: int  # bytes
    new_bytes: float  # bytes beyond what a picture that only copies its references costs
    block_qps: bool = False  # HEVC's coding blocks may depart from this QP (cu_qp_delta_enabled_flag)
    reference: bool = True  # later pictures may copy it (HEVC: not a sub-layer non-reference picture)


Packets = list[Packet]


def guard(qp: float) -> float:
    """The share of the model's correction a frame coded at slice QP QP gets."""
    return min(max((qp - NO_QP) / (FULL_QP - NO_QP), 0.0), 1.0)


def spared(qps: Sequence[float]) -> str | None:
    """What the guard does to frames of these QPS, in words; None where it leaves them all whole."""
    fine = sum(qp < FULL_QP for qp in qps)
    if not fine:
        return None
    return (f"the source-QP guard spares {fine} of {len(qps)} frames (groups of pictures coded finer than QP "
            f"{FULL_QP}, down to {round(min(qps), 1):g}, where the model would harm them): they get less of its "
            f"correction, none from QP {NO_QP} down")


def unread(source: Path) -> str | None:
    """What a job should say of SOURCE where its video is none of CODECS, whose QPs the guard cannot read; None
    where it is one of them or of UNREAD_UNHARMED, an intermediate (read by its profile), or where ffprobe cannot
    say."""
    stream = _first_video(source)
    codec = stream.get("codec_name") if stream else None
    if not codec or codec in CODECS or codec in UNREAD_UNHARMED or codec in INTERMEDIATE_QPS:
        return None
    return (f"the source-QP guard reads the QPs of H.264, HEVC, AV1, VP9, VP8 and MPEG-2 video, not of {codec}: "
            f"every frame gets the model's whole correction, which harms a lossless or near-transparent source "
            f"(an intermediate such as FFV1, an archive, a still picture)")


def intermediate_qp(source: Path) -> float | None:
    """The QP the guard reads for SOURCE where it is an intermediate (ProRes, DNxHD/DNxHR), by its profile
    (INTERMEDIATE_QPS; NO_QP for a profile not listed there); None where it is none."""
    stream = _first_video(source)
    profiles = INTERMEDIATE_QPS.get(stream.get("codec_name")) if stream else None
    return None if profiles is None else float(profiles.get(stream.get("profile"), NO_QP))


def _video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """CONTAINER's first video stream that is not a cover picture (StopIteration where it has none)."""
    return next(s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic)


def _first_video(source: Path) -> dict | None:
    """SOURCE's first video stream as ffprobe describes it (read-only: it is shared); None where it has none or
    cannot be read.  Probed once per version of the file: a job asks three times (the note for unread codecs,
    an intermediate's profile, the packets), 84 ms each on this project's CPU."""
    path = source.absolute()
    try:
        stat = path.stat()
    except OSError:
        return None
    return _probe_video(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _probe_video(path: str, size: int, mtime_ns: int) -> dict | None:  # size and time: a rewritten file is probed anew
    try:
        streams = ffmpeg.probe(path, select_streams="V:0")["streams"]
    except ffmpeg.Error:
        return None
    return streams[0] if streams else None


def qindex_qp(index: int) -> float:
    """An AV1 or VP9 quantiser index as the HEVC QP of the same step.  Up to index 95, where every guarded frame
    lies, their AC step is index + 7 in eighths of an orthonormal transform's unit (AV1 and VP9 share the 8-bit
    table; at 10 bits both the table and the samples are 4 times larger); HEVC's step is 2^((QP - 4) / 6)."""
    return 4 + 6 * math.log2((index + 7) / 8)


def vp8_qp(index: int) -> float:
    """A VP8 luma AC quantiser index as the HEVC QP of the same step.  Up to index 54, where every guarded frame
    lies, its step is index + 4 (RFC 6386's table) in halves of an orthonormal transform's unit (VP8's 4x4
    transform doubles it)."""
    return 4 + 6 * math.log2((index + 4) / 2)


def mpeg2_qp(code: int, nonlinear: bool) -> float:
    """An MPEG-2 slice's quantiser_scale_code as the HEVC QP of the same step: the code's quantiser scale (twice
    the code, or the non-linear table) times a matrix weight over 16, taken at MPEG2_WEIGHT."""
    if not nonlinear:
        scale = 2 * code
    else:  # 1-8 by 1, to 24 by 2, to 56 by 4, to 112 by 8
        scale = (code if code <= 8 else 2 * (code - 4) if code <= 16 else 4 * (code - 10) if code <= 24
                 else 8 * (code - 17))
    return 4 + 6 * math.log2(scale * MPEG2_WEIGHT / 16)


class _Quantisers:
    """Reads the fields _FIELD picks out of one stream's headers, in order: each slice's or frame's QP on HEVC's
    scale, from the state the parameter sets and picture headers before it set."""

    def __init__(self) -> None:
        self.pps, self.init_qp, self.block_qps, self.nonlinear, self.nal_type = 0, {}, {}, False, 1

    @property
    def hidden_block_qps(self) -> bool:
        """Whether the blocks of the slice read last may be coded at QPs its header does not state (HEVC)."""
        return self.block_qps.get(self.pps, False)

    @property
    def reference(self) -> bool:
        """Whether later pictures may copy the slice read last: HEVC's sub-layer non-reference NAL unit types are
        the even ones below 16 (TRAIL_N, ...); H.264's slices (types 1 and 5) read as references."""
        return self.nal_type >= 16 or self.nal_type % 2 == 1

    def read(self, name: bytes, value: int) -> float | None:
        if name.endswith(b"parameter_set_id"):
            self.pps = value
        elif name.endswith(b"minus26"):
            self.init_qp[self.pps] = 26 + value
        elif name == b"nal_unit_type":
            self.nal_type = value
        elif name == b"cu_qp_delta_enabled_flag":
            self.block_qps[self.pps] = bool(value)
        elif name == b"slice_qp_delta":
            return self.init_qp.get(self.pps, 26) + value
        elif name == b"base_q_idx":
            return qindex_qp(value)
        elif name == b"q_scale_type":
            self.nonlinear = bool(value)
        else:
            return mpeg2_qp(value, self.nonlinear)
        return None


def packet_qps(source: Path) -> tuple[Packets, Fraction] | None:
    """SOURCE's first video stream's packets, in decode order, as ``Packet``s (those that state no QP left out),
    and the stream's time base.  None where the stream is none of CODECS (or SOURCE cannot be read)."""
    stream = _first_video(source)
    if not stream or stream.get("codec_name") not in CODECS:
        return None
    packets = _vp8_packets(source) if stream["codec_name"] == "vp8" else _traced_packets(source)
    if packets is None:
        return None
    copy = COPY_BYTES + COPY_BYTES_PER_PIXEL * int(stream.get("width") or 0) * int(stream.get("height") or 0)
    read = [Packet(pts, key, sum(qps) / len(qps), size, max(size - copy, 0.0), blocks, reference)
            for pts, key, qps, size, blocks, reference in packets if qps]
    if stream["codec_name"] == "h264" and any(packet.qp < FULL_QP for packet in read):
        read = _with_macroblock_qps(source, read)
    return read, Fraction(stream["time_base"])


def _traced_packets(source: Path) -> list[list] | None:
    """SOURCE's first video stream's packets as trace_headers logs them: [pts, key, QPs of its slices or frames,
    bytes, whether its blocks may depart from them, whether later pictures may copy it]; None where ffmpeg fails."""
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-copyts", "-i", str(source.absolute()), "-map", "0:V:0",
           "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"]
    quantisers, packets = _Quantisers(), []
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        for line in p.stderr:  # a 2-hour film logs about 12 M lines: the cheap test first
            if b"Packet:" in line and (m := _PACKET.search(line)):
                pts = None if m.group(3) is None else int(m.group(3))
                packets.append([pts, bool(m.group(2)), [], int(m.group(1)), False, False])
            elif (b"_qp_" in line or b"set_id" in line or b"q_idx" in line or b"_scale_" in line
                  or b"nal_unit_type" in line) and (m := _FIELD.search(line)):
                qp = quantisers.read(m.group(1), int(m.group(2)))
                if qp is not None and packets:
                    packets[-1][2].append(qp)
                    packets[-1][4] |= quantisers.hidden_block_qps
                    packets[-1][5] |= quantisers.reference
    return None if p.returncode else packets


def _vp8_packets(source: Path) -> list[list] | None:
    """SOURCE's first video stream's packets as ``_traced_packets`` gives them, for VP8 (``vp8.Quantisers``);
    None where PyAV cannot read SOURCE."""
    quantisers, packets = vp8.Quantisers(), []
    try:
        with av.open(str(source.absolute())) as container:
            stream = _video(container)
            for packet in container.demux(stream):
                if packet.size:
                    index = quantisers.read(bytes(packet))
                    qps = [] if index is None else [vp8_qp(index)]
                    packets.append([packet.pts, packet.is_keyframe, qps, packet.size, False, True])
    except (av.error.FFmpegError, StopIteration):
        return None
    return packets


def keyframe_texture_qps(source: Path) -> list[float]:
    """Per keyframe of an H.264 SOURCE's first video stream, in decode order: the mean QP of its macroblocks, each
    weighted by the variance of its decoded luma (+1).  Adaptive quantisation (x264's default) codes flat
    macroblocks far finer than the slice QP and textured ones coarser, and the model acts on texture: a screen
    recording's slice QP can read 8 where its text is coded at 27 (docs/results.md).  Only keyframes are decoded
    (the decoder skips the rest): a few seconds for a film."""
    with av.open(str(source.absolute())) as container:
        stream = _video(container)
        stream.codec_context.options = {"export_side_data": "venc_params"}
        stream.codec_context.skip_frame = "NONKEY"
        stream.thread_type = "SLICE"  # with frame threads the exported QPs are at times read before they are set
        qps = []
        for frame in container.decode(stream):
            params = frame.side_data.get("VIDEO_ENC_PARAMS")
            if params is None:
                continue
            bits = frame.format.components[0].bits
            block_qps = params.qp_map() - 6.0 * (bits - 8)  # exported with the high-bit-depth offset; slice QPs without
            rows, cols = block_qps.shape
            plane = frame.planes[0]
            dtype = np.uint16 if bits > 8 else np.uint8
            luma = np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width].astype(np.float32)
            luma = np.pad(luma, ((0, rows * 16 - plane.height), (0, cols * 16 - plane.width)), mode="edge")
            texture = luma.reshape(rows, 16, cols, 16).var(axis=(1, 3)) + 1
            qps.append(float(np.average(block_qps, weights=texture)))
    return qps


def _with_macroblock_qps(source: Path, packets: Packets) -> Packets:
    """PACKETS (an H.264 stream's, as ``packet_qps`` reads their slices) with each group of pictures' QPs moved
    by what its keyframe's macroblocks say its slice QP misses (``keyframe_texture_qps``); where the keyframes
    decoded do not pair with the key packets one to one, by the median of that."""
    keys = [i for i, packet in enumerate(packets) if packet.key]
    try:
        textures = keyframe_texture_qps(source)
    except (av.error.FFmpegError, StopIteration, ValueError):
        return packets
    if not keys or not textures:
        return packets
    offsets = [t - packets[i].qp for i, t in zip(keys, textures)]
    if len(textures) != len(keys):
        offsets = [statistics.median(offsets)] * len(keys)
    shift = [offsets[max(bisect.bisect_right(keys, i) - 1, 0)] for i in range(len(packets))]
    return [packet._replace(qp=packet.qp + d) for packet, d in zip(packets, shift)]


def x265_cutree(source: Path) -> Cutree:
    """The cutree of SOURCE's first video stream as x265 states its options (rc-lookahead, qcomp, no-cutree: none)
    in the stream's headers or first picture; x265's defaults (MEDIUM) where none are stated (x265 run with
    info=0, another encoder: taken finer than it may code, which spares more, not less)."""
    try:
        with av.open(str(source.absolute())) as container:
            stream = _video(container)
            packet = next((p for p in container.demux(stream) if p.size), None)
            data = (stream.codec_context.extradata or b"") + (bytes(packet) if packet else b"")
    except (av.error.FFmpegError, StopIteration):
        return MEDIUM
    if not (m := _X265_OPTIONS.search(data)):
        return MEDIUM
    options = dict((*option.split(b"=", 1), b"")[:2] for option in m.group(1).split())
    if b"no-cutree" in options:
        return Cutree(0.0, 0)
    return Cutree(CUTREE_PER_QCOMP * (1 - float(options.get(b"qcomp", 0.6))),
                  int(options.get(b"rc-lookahead", MEDIUM.frames)))


def cutree_qps(group: Packets, cutree: Cutree = MEDIUM) -> list[float]:
    """Per picture of one group of pictures (keyframe first, decode order), how much finer than its slice QP x265's
    cutree codes it: none unless its blocks may depart from the slice QP and later pictures may copy it; else
    CUTREE's strength x log2(1 + what the pictures of the group within its lookahead inherit of it), each inheriting
    the share COPIED of what the one before it showed.  COPIED follows from the bytes the later pictures bring anew
    against the keyframe's: all of it in a still (its keyframe 9.7 QPs finer with 20 pictures after it), most of
    it in a scroll (each picture brings a few rows: every reference picture nearly as fine), less in motion."""
    if len(group) < 2 or not group[0].block_qps:
        return [0.0] * len(group)
    brought = statistics.fmean(p.new_bytes for p in group[1:]) / max(group[0].size, 1)
    copied = min(max(1 - COPIED_PER_BYTE * brought, 0.0), 1.0)
    offsets = []
    for i, picture in enumerate(group):
        inherited = sum(copied ** k for k in range(1, min(cutree.frames, len(group) - 1 - i) + 1))
        offsets.append(cutree.strength * math.log2(1 + inherited) if picture.reference else 0.0)
    return offsets


def gop_qps(packets: Packets, cutree: Cutree = MEDIUM) -> list[float]:
    """Per packet (as ``packet_qps`` gives them), the QP of its group of pictures (from one keyframe to the next):
    its pictures' QPs weighted by the bytes each brings anew (the first all of its own, the others
    ``Packet.new_bytes``).  The guard gives a GOP's frames one strength, so that a still scene does not pulse with the
    QPs of its I-, P- and B-pictures; and rate control codes a keyframe that later pictures copy finer than them
    (libvpx, SVT-AV1 and x264's macroblock tree by 10-15 QPs), so what the frames show is the keyframe's QP where
    they copy it and their own where they move.  Where the bits went says which: a still group's later pictures
    bring nothing anew, a moving one's do.  x265 codes the pictures that later ones copy finer below the slice
    header (its cutree lowers the QPs of the blocks they copy): an HEVC picture whose blocks may depart from its
    slice QP is taken ``cutree_qps`` finer, by CUTREE (``x265_cutree``)."""
    starts = [i for i, packet in enumerate(packets) if packet.key or i == 0] + [len(packets)]
    qps = []
    for a, b in zip(starts, starts[1:]):
        group = packets[a:b]
        shown = [p.qp - offset for p, offset in zip(group, cutree_qps(group, cutree))]
        new_bytes = [group[0].size] + [p.new_bytes for p in group[1:]]
        qps += [float(np.average(shown, weights=new_bytes))] * (b - a)
    return qps


def frame_qps(source: Path, times_ms: Sequence[float], frames: int) -> list[float] | None:
    """For each of the FRAMES frames of SOURCE as a source filter lists them (TIMES_MS: their times in ms, as
    BestSource gives them), the QP of its group of pictures (``gop_qps``), matched by time; None
    where SOURCE holds none (none of CODECS).  A stream without times (raw .264/.hevc) is taken in decode
    order, which differs from display order only within a GOP.  An intermediate reads by its profile
    (``intermediate_qp``)."""
    if (qp := intermediate_qp(source)) is not None:
        return [qp] * frames
    read = packet_qps(source)
    if not read or not read[0]:
        return None
    packets, time_base = read
    gops = gop_qps(packets, x265_cutree(source) if any(p.block_qps for p in packets) else MEDIUM)
    if len(times_ms) != frames or all(packet.pts is None for packet in packets):
        return gops if len(gops) == frames else [statistics.median(gops)] * frames
    ms_per_tick = float(time_base * 1000)
    pictures: list[list[float]] = []  # [ms, qp]: a packet without a time (a frame's second field) joins the one before
    for packet, qp in zip(packets, gops):
        if packet.pts is not None:
            pictures.append([packet.pts * ms_per_tick, qp])
        elif pictures:
            pictures[-1][1] = min(pictures[-1][1], qp)
    pictures.sort(key=lambda p: p[0])
    starts = [ms for ms, _ in pictures]
    qps = [qp for _, qp in pictures]

    def nearest(ms: float) -> float:
        i = bisect.bisect_left(starts, ms)
        j = min((k for k in (i - 1, i) if 0 <= k < len(starts)), key=lambda k: abs(starts[k] - ms))
        return qps[j]

    return [nearest(ms) for ms in times_ms]
