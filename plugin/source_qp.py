"""The QP each frame of an H.264 or HEVC source was coded at, read from its slice headers, and the guard that
fades the model's correction out on near-transparent frames.

The model is trained on pictures coded at slice QP 19 and coarser (x265 --qp 22-42: intra pictures 3 below) and,
blind to the QP, corrects finer ones just as hard: held-out photos and screens lose up to 2.5 dB at slice QP 9
(docs/results.md, "The source-QP guard").  The bitstream states what the model cannot see, so where it is
at hand each frame's correction is scaled by ``guard(qp)`` of the finest QP in its group of pictures: whole from
QP 17 up, none at QP 9 and below, linear between, the strengths measured best at each QP.  Sources without it
(other codecs, raw images) are enhanced as before.
"""

from __future__ import annotations

import bisect
import re
import statistics
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import ffmpeg

CODECS = ("h264", "hevc")  # whose slice QPs share one scale: the step doubles every 6
FULL_QP, NO_QP = 17, 9  # the guard's ends: the correction whole at FULL_QP and above, none at NO_QP and below

# trace_headers logs each syntax element as "<bit position> <name> <bits> = <value>"; only these are needed: a
# picture parameter set's id and initial QP, and a slice header's parameter set and QP delta.
_FIELD = re.compile(rb"\b((?:pps_|slice_)?pic_parameter_set_id|(?:pic_)?init_qp_minus26|slice_qp_delta)"
                    rb"\s+\S+ = (-?\d+)")
_PACKET = re.compile(rb"\bPacket: \d+ bytes(, key frame)?.*?(?:, pts (-?\d+)|, no pts)")


def guard(qp: float) -> float:
    """The share of the model's correction a frame coded at slice QP QP gets."""
    return min(max((qp - NO_QP) / (FULL_QP - NO_QP), 0.0), 1.0)


def spared(qps: Sequence[float]) -> str | None:
    """What the guard does to frames of these QPS, in words; None where it leaves them all whole."""
    fine = sum(qp < FULL_QP for qp in qps)
    if not fine:
        return None
    return (f"the source-QP guard spares {fine} of {len(qps)} frames (groups of pictures coded finer than QP "
            f"{FULL_QP}, down to {min(qps):g}, where the model would harm them): they get less of its correction, "
            f"none from QP {NO_QP} down")


def _first_video(source: Path) -> dict | None:
    streams = ffmpeg.probe(str(source.absolute()), select_streams="V:0")["streams"]
    return streams[0] if streams else None


def packet_qps(source: Path) -> tuple[list[tuple[int | None, bool, float]], Fraction] | None:
    """Per packet of SOURCE's first video stream, in decode order: (its pts or None, whether it is a keyframe, the
    mean QP of its slices); and the stream's time base.  None where the stream is not H.264 or HEVC (or SOURCE
    cannot be read)."""
    try:
        stream = _first_video(source)
    except ffmpeg.Error:
        return None
    if not stream or stream.get("codec_name") not in CODECS:
        return None
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-copyts", "-i", str(source.absolute()), "-map", "0:V:0",
           "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"]
    init_qp: dict[int, int] = {}
    pps, packets = 0, []
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        for line in p.stderr:  # a 2-hour film logs about 12 M lines: the cheap test first
            if b"Packet:" in line and (m := _PACKET.search(line)):
                packets.append((None if m.group(2) is None else int(m.group(2)), bool(m.group(1)), []))
            elif (b"_qp_" in line or b"set_id" in line) and (m := _FIELD.search(line)):
                name, value = m.group(1), int(m.group(2))
                if name.endswith(b"parameter_set_id"):
                    pps = value
                elif name.endswith(b"minus26"):
                    init_qp[pps] = 26 + value
                elif packets:
                    packets[-1][2].append(init_qp.get(pps, 26) + value)
    if p.returncode:
        return None
    return [(pts, key, sum(qps) / len(qps)) for pts, key, qps in packets if qps], Fraction(stream["time_base"])


def gop_floor(packets: list[tuple[int | None, bool, float]]) -> list[float]:
    """Per packet (as ``packet_qps`` gives them), the finest QP of its group of pictures (from one keyframe to the
    next): the guard gives a GOP's frames one strength, so that a still scene does not pulse with the QPs of its
    I-, P- and B-pictures, and none more than its finest picture, coded 2-4 QPs finer than the rest, can take."""
    starts = [i for i, (_, key, _) in enumerate(packets) if key or i == 0] + [len(packets)]
    floor = []
    for a, b in zip(starts, starts[1:]):
        floor += [min(qp for _, _, qp in packets[a:b])] * (b - a)
    return floor


def frame_qps(source: Path, times_ms: Sequence[float], frames: int) -> list[float] | None:
    """For each of the FRAMES frames of SOURCE as a source filter lists them (TIMES_MS: their times in ms, as
    BestSource gives them), the finest slice QP of its group of pictures (``gop_floor``), matched by time; None
    where SOURCE holds none (not H.264 or HEVC).  A stream without times (raw .264/.hevc) is taken in decode
    order, which differs from display order only within a GOP."""
    read = packet_qps(source)
    if not read or not read[0]:
        return None
    packets, time_base = read
    floor = gop_floor(packets)
    if len(times_ms) != frames or all(pts is None for pts, _, _ in packets):
        return floor if len(floor) == frames else [statistics.median(floor)] * frames
    ms_per_tick = float(time_base * 1000)
    pictures: list[list[float]] = []  # [ms, qp]: a packet without a time (a frame's second field) joins the one before
    for (pts, _, _), qp in zip(packets, floor):
        if pts is not None:
            pictures.append([pts * ms_per_tick, qp])
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
