"""The video encoder: what the system ffmpeg's encoder takes, and `--encoder-options`, more ffmpeg output options
for it as a house encoding setting states them ("-tune grain -x265-params aq-mode=3", "-b:v 8M -maxrate 10M
-bufsize 16M"; and -movflags, which goes to OUT's muxer), refused where they would break what a job promises
(every input frame, at its time, in segments that resume)."""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import subprocess

import av

_SEGMENTS = "DiffQE sets it to cut, time and join the video's segments"
_FRAMES = "the output has the input's frames, at their size and times"
# Options DiffQE sets or that break the job, by name without a stream specifier, with what to do instead.
REFUSED = {
    **dict.fromkeys(("c", "codec", "vcodec"), "use --codec"),
    "crf": "use --crf",
    "preset": "use --preset",
    "pix_fmt": "--bits sets the output's depth; its chroma layout stays the input's",
    **dict.fromkeys(("f", "i", "map", "y", "n", "segment_format", "segment_frames", "segment_list",
                     "segment_list_type", "segment_start_number", "segment_time", "reset_timestamps",
                     "force_key_frames", "forced-idr", "progress", "vsync", "fps_mode", "copyts", "itsoffset"),
                    _SEGMENTS),
    **dict.fromkeys(("vf", "filter", "filter_complex", "lavfi", "s", "r", "aspect", "t", "to", "ss", "sseof",
                     "frames", "vframes", "fs"), _FRAMES),
    **dict.fromkeys(("pass", "passlogfile"), "two passes cannot run over a resumable job's segments: use a CRF, "
                    "or a bitrate with -maxrate and -bufsize"),
}
MUXER = ("movflags", "tag")  # options for OUT's muxer (MP4's +faststart, its sample entry), not the segments'

# Rate control other than --crf: the default CRF is then left out (x264 and x265 would let it win).
RATE = {"b", "qp", "q", "qscale", "global_quality", "cq"}
_RATE_PARAM = re.compile(r"(?:^|:)(?:bitrate|qp|crf)=")  # the same inside -x264-params / -x265-params


def parse(text: str) -> dict[str, str]:
    """TEXT as ffmpeg options {"tune": "grain", "b:v": "8M"}: "-name value" pairs, each for the video stream;
    ValueError saying what is wrong and what to do instead."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    options: dict[str, str] = {}
    for i in range(0, len(words), 2):
        flag, value = words[i], words[i + 1] if i + 1 < len(words) else None
        if not re.fullmatch(r"-[A-Za-z][\w:-]*", flag):
            raise ValueError(f"{flag!r}: expected an option such as -tune, each followed by its value")
        if value is None or re.fullmatch(r"-[A-Za-z].*", value):
            raise ValueError(f"{flag} has no value: give each option one (flags such as -an have no place here)")
        name, _, stream = flag[1:].partition(":")
        if stream not in ("", "v", "v:0", "0"):
            raise ValueError(f"{flag}: these options are for the enhanced video; the input's other streams are "
                             "copied as they are")
        if name in REFUSED:
            raise ValueError(f"{flag}: {REFUSED[name]}")
        options[flag[1:]] = value
    return options


def split(options: dict) -> tuple[dict, dict]:
    """OPTIONS as (the encoder's, OUT's muxer's)."""
    muxer = {key: value for key, value in options.items() if key.partition(":")[0] in MUXER}
    return {key: value for key, value in options.items() if key not in muxer}, muxer


def sets_rate(options: dict[str, str]) -> bool:
    """Whether OPTIONS choose the rate control (a bitrate or quantiser), which the default CRF must not override."""
    return any(key.partition(":")[0] in RATE or (key.endswith("-params") and _RATE_PARAM.search(value))
               for key, value in options.items())


def checked(text: str) -> str:
    """TEXT once parse() accepts it (an argparse type: its error is the command line's)."""
    try:
        parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


@functools.cache
def _help(codec: str) -> str:
    return subprocess.run(["ffmpeg", "-hide_banner", "-h", f"encoder={codec}"], capture_output=True, text=True).stdout


def pixel_formats(codec: str) -> list[str]:
    """The pixel formats that the system ffmpeg's CODEC encoder takes ([] where it states none)."""
    line = next((ln for ln in _help(codec).splitlines() if "Supported pixel formats:" in ln), "")
    return line.split(":", 1)[1].split() if line else []


def has_option(codec: str, name: str) -> bool:
    """Whether the system ffmpeg's CODEC encoder has a private option NAME (-crf: x264, x265, VP9, AV1; not
    ProRes, MPEG-2 or NVENC, which ffmpeg would pass over with a warning)."""
    return re.search(rf"^\s+-{re.escape(name)}\s", _help(codec), re.M) is not None


def own_rate(codec: str) -> str | None:
    """Where CODEC has no CRF and codes at a rate of its own choosing (MPEG-2's 200 kbit/s, NVENC's defaults),
    a warning that says how to set one; None for encoders whose quality is their profile's (ProRes, DNxHD) or
    that are lossless."""
    try:
        descriptor = av.codec.Codec(codec, "w")
    except ValueError:  # an encoder of the system's ffmpeg that PyAV's own build lacks
        return None
    if has_option(codec, "crf") or descriptor.intra_only or not descriptor.lossy:
        return None
    return (f"{codec} has no CRF: it codes at its own default rate, which may be far below the source's quality; "
            f"set one with --encoder-options (e.g. '-b:v 20M', or its quality option: ffmpeg -h encoder={codec})")
