"""The enhanced video on the input's own timeline.

vspipe's y4m carries one constant frame rate, so the encoder stamps frame i at i / rate.  A variable-frame-rate
source (phones, screen recordings) would then drift from its own audio, and any source whose video starts later
than its audio would start early.  So the segments are joined by copying their packets into one file with frame
i at the time the input shows its frame i: the input's packet times in presentation order (no decoding), or,
where the packets do not count the frames (a broadcast recording cut mid-GOP, whose leading pictures cannot be
decoded and which the source filter drops), the times of the frames the decoder gives.
"""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av

Times = list[Fraction]  # seconds, one per frame, increasing


def video_pts(path: Path, frames: int | None = None) -> tuple[list[int | None], Fraction] | None:
    """PATH's video presentation times in its time base (None where a packet has none), one per frame: its
    packets' (no decoding; those the decoder would drop left out), or where they do not count FRAMES, those of
    the frames its decoder gives (a second pass over the video, only for such streams); None where neither
    counts FRAMES."""
    for decode in (False, True):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pts = ([f.pts for f in container.decode(stream)] if decode else
                   [p.pts for p in container.demux(stream) if p.size and not p.is_discard])
            unit = stream.time_base
        if frames is None or len(pts) == frames:
            return pts, unit
    return None


def frame_times(src: Path, start: Fraction, frames: int) -> Times | None:
    """The presentation times of SRC's FRAMES video frames, less START (where ffmpeg puts the file's zero); None
    where it has no times, two frames share one, or it does not have FRAMES frames (said on stderr)."""
    found = video_pts(src, frames)
    if found is None:
        print(f"timing: the frames of the input do not match the {frames} frames enhanced; the output keeps a "
              "constant rate", file=sys.stderr)
        return None
    pts, unit = found
    if not pts or None in pts:
        return None
    times = [p * unit - start for p in sorted(pts)]
    return times if all(a < b for a, b in zip(times, times[1:])) else None


def _decode_ranks(segment: Path) -> list[int]:
    """For each packet of SEGMENT in decode order, its frame's place in presentation order."""
    with av.open(str(segment)) as container:
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    order = sorted(range(len(pts)), key=pts.__getitem__)
    ranks = [0] * len(pts)
    for rank, k in enumerate(order):
        ranks[k] = rank
    return ranks


# The containers the segments are joined in, in the order tried: PyAV's Matroska muxer refuses DNxHD, CineForm,
# v210, HAP, PNG (QuickTime takes them), UT Video, HuffYUV and Sorenson's FLV1 (NUT takes them), which the system
# ffmpeg writes into the Matroska segments.
JOINED_IN = (("matroska", ".mkv"), ("mov", ".mov"), ("nut", ".nut"))


def join(segments: list[Path], times: Times | None, out: Path) -> tuple[Path, int, Fraction]:
    """SEGMENTS' packets, in order, into OUT (Matroska; for a codec that PyAV's Matroska muxer does not take, the
    first of JOINED_IN's containers that does, under its suffix) with frame i at TIMES[i] (one per frame; where
    TIMES is None, at the encoded constant rate from 0); returns the file written, the number of frames and the
    first one's time.
    A packet's decode time is the time of the frame ``delay`` places before it in decode order: it never passes
    its own presentation time and always grows."""
    ranks = [_decode_ranks(s) for s in segments]
    frames = sum(map(len, ranks))
    if times is None:
        with av.open(str(segments[0])) as container:
            rate = container.streams.video[0].guessed_rate
        times = [i / rate for i in range(frames)]
    step = times[1] - times[0] if frames > 1 else Fraction(1)  # a single frame is never reordered
    delay = max((k - r for rs in ranks for k, r in enumerate(rs)), default=0)

    def at(i: int) -> Fraction:  # before the first frame: continue its spacing backwards
        return times[i] if i >= 0 else times[0] + i * step

    with av.open(str(segments[0])) as container:
        joined_in, suffix = next(((name, suffix) for name, suffix in JOINED_IN
                                  if _holds(container.streams.video[0], name)), JOINED_IN[0])
    out = out.with_suffix(suffix)
    with av.open(str(out), "w", format=joined_in) as muxer:
        stream = None
        first = 0
        for segment, rs in zip(segments, ranks):
            with av.open(str(segment)) as container:
                source = container.streams.video[0]
                if stream is None:
                    stream = muxer.add_stream_from_template(source, opaque=True)
                    if joined_in == "nut":  # a FourCC that says more than the codec (UT Video's layout)
                        stream.codec_tag = source.codec_tag
                    stream.time_base = Fraction(1, 1000)  # Matroska's millisecond
                    muxer.start_encoding()  # the header settles the time base (QuickTime's is its own timescale)
                    base = stream.time_base
                packets = (p for p in container.demux(source) if p.size)
                for k, (packet, rank) in enumerate(zip(packets, rs)):
                    packet.duration = round(packet.duration * packet.time_base / base)
                    packet.pts = round(at(first + rank) / base)
                    packet.dts = round(at(first + k - delay) / base)
                    packet.stream, packet.time_base = stream, base
                    muxer.mux(packet)
            first += len(rs)
    return out, frames, times[0]


def _holds(stream: av.video.stream.VideoStream, container: str) -> bool:
    """Whether PyAV's muxer of CONTAINER takes STREAM's codec (it checks as the stream is added)."""
    with av.open(io.BytesIO(), "w", format=container) as muxer:
        try:
            muxer.add_stream_from_template(stream, opaque=True)
        except ValueError:
            return False
    return True
