"""What the output takes from the input besides the enhanced video: audio, subtitles, chapters, metadata, the
video stream's own tags (language, title, timecode), attachments and cover pictures."""

from __future__ import annotations

import re
from pathlib import Path

import av
import ffmpeg

MOV_FAMILY = {".mp4", ".m4v", ".mov"}  # containers of the ISO base media format
MATROSKA = {".mkv", ".mka", ".mks"}
FFMPEG_QUIET = ["-hide_banner", "-nostdin", "-v", "error"]  # errors only, on stderr

# Tags that describe the input's coded video, not the enhanced one: Matroska's statistics (mkvmerge writes them,
# with a language suffix in older files), its duration, the encoder's name, and the display rotation (ffmpeg 4
# states it as a tag; the enhanced frames are already upright, and copied it would turn them again), and VP9's
# alpha_mode (Matroska's muxer would mark the output as carrying an alpha plane).
_STALE = re.compile(r"(BPS|DURATION|NUMBER_OF_FRAMES|NUMBER_OF_BYTES|_STATISTICS_\w+|ENCODER|ROTATE|ALPHA_MODE)(-\w+)?",
                    re.I)

# Cover pictures by codec: their MIME type and file suffix as Matroska attachments. MP4 and QuickTime hold the
# first three only (ffmpeg's mov muxer).
PICTURES = {"mjpeg": ("image/jpeg", ".jpg"), "png": ("image/png", ".png"), "bmp": ("image/bmp", ".bmp"),
            "gif": ("image/gif", ".gif"), "tiff": ("image/tiff", ".tif"), "webp": ("image/webp", ".webp")}
MOV_PICTURES = ("mjpeg", "png", "bmp")


def is_picture(stream: dict) -> bool:
    """Whether STREAM is a cover picture (an MP4 cover, an image attached to a Matroska file), not video."""
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _pictures(streams: list[dict], dst: Path) -> list[dict]:
    """The input's cover pictures that DST's container holds."""
    suffix = dst.suffix.lower()
    holds = PICTURES if suffix in MATROSKA else MOV_PICTURES if suffix in MOV_FAMILY else ()
    return [s for s in streams if is_picture(s) and s.get("codec_name") in holds]


def left_behind(streams: list[dict], video: dict, dst: Path) -> list[str]:
    """The input's streams that DST will not hold, described for a warning. A QuickTime timecode track is not
    among them: its timecode is a tag of the video stream, which the output keeps."""
    carried = {s["index"] for s in _pictures(streams, dst)}
    program = video.get("program")
    members = None if program is None else {s["index"] for s in program["streams"]}
    lost = []
    for s in streams:
        kind = s.get("codec_type")
        codec = s.get("codec_tag_string") if kind == "data" else s.get("codec_name")  # a data stream's name: its tag
        what = f"stream #{s['index']} ({kind}, {codec})"
        if members is not None and s["index"] not in members and kind in ("audio", "subtitle"):
            lost.append(f"{what}: of another program than the enhanced video's ({program['program_id']})")
        elif kind == "video" and is_picture(s) and s["index"] not in carried:
            lost.append(f"{what}: a cover picture that a {dst.suffix} file does not hold (.mkv holds any)")
        elif kind == "video" and not is_picture(s) and s["index"] != video["index"]:
            lost.append(f"{what}: a second video; only the first is enhanced")
        elif kind == "data" and s.get("codec_tag_string") != "tmcd":
            lost.append(f"{what}: a data stream (a camera's telemetry, say), not carried over")
        elif kind == "attachment" and dst.suffix.lower() not in MATROSKA:
            name = s.get("tags", {}).get("filename", "")
            lost.append(f"{what}: the attachment {name} (a subtitle font, say), which only .mkv holds")
    return lost


# What a video stream can carry inside its own frames (ffprobe's names for a frame's side data), which the
# re-encode from VapourSynth's frames does not keep, and what that leaves.
_EMBEDDED = {
    "ATSC A53 Part 4 Closed Captions": "closed captions (CEA-608/708 in the video stream), which the re-encoded "
    "video does not keep (ffmpeg's lavfi input movie=IN[out0+subcc] extracts them as a subtitle track)",
    "HDR Dynamic Metadata SMPTE2094-40 (HDR10+)": "HDR10+ dynamic metadata, which the re-encoded video does not keep "
    "(displays fall back to its HDR10 static metadata)",
}


def embedded_left_behind(side_data: list[dict], stream: dict) -> list[str]:
    """What the input's video carries in its frames (SIDE_DATA: its first frame's; STREAM: ffprobe's stream) that
    the output will not have, described for a warning."""
    kinds = {d.get("side_data_type") for d in side_data}
    if stream.get("closed_captions"):
        kinds.add("ATSC A53 Part 4 Closed Captions")
    return [what for kind, what in _EMBEDDED.items() if kind in kinds]


def _picture_bytes(src: Path, index: int) -> bytes:
    """The image file that SRC's stream INDEX holds: a cover picture is one packet."""
    with av.open(str(src)) as container:
        return bytes(next(container.demux(container.streams[index])))


def _extra_args(src: Path, streams: list[dict], video: dict, dst: Path, folder: Path) -> list[str]:
    """ffmpeg options that ffmpeg-python's keyword options cannot say (one key, several values): the video
    stream's disposition (Matroska's default-track flag) and tags, and the cover pictures, copied (MP4,
    QuickTime) or attached from FOLDER (Matroska)."""
    args = ["-disposition:v:0", "+".join(k for k, on in video.get("disposition", {}).items() if on) or "0"]
    for key, value in video.get("tags", {}).items():
        if not _STALE.fullmatch(key):
            args += ["-metadata:s:v:0", f"{key}={value}"]
    attachments = sum(s.get("codec_type") == "attachment" for s in streams)
    for k, picture in enumerate(_pictures(streams, dst)):
        if dst.suffix.lower() in MOV_FAMILY:  # the enhanced video is v:0, so the pictures are v:1 on
            args += ["-map", f"1:{picture['index']}", f"-c:v:{k + 1}", "copy", f"-disposition:v:{k + 1}",
                     "attached_pic"]
            continue
        mimetype, suffix = PICTURES[picture["codec_name"]]
        tags = picture.get("tags", {})
        name = tags.get("filename") or f"cover{k or ''}{suffix}"
        path = folder / f"picture{k}{suffix}"
        path.write_bytes(_picture_bytes(src, picture["index"]))
        t = f"-metadata:s:t:{attachments + k}"  # after the input's own attachments
        args += ["-attach", str(path), t, f"mimetype={tags.get('mimetype') or mimetype}", t, f"filename={name}"]
    return args


def mux_command(video: ffmpeg.nodes.FilterableStream, src: Path, source_video: dict, dst: Path, video_options: dict,
                folder: Path) -> list[str]:
    """VIDEO, with SRC's audio, subtitles, chapters, metadata, attachments and cover pictures and the tags of
    SOURCE_VIDEO (the stream enhanced, as ffprobe lists it, with its "input_streams"), into DST; files made on
    the way go into FOLDER."""
    source = ffmpeg.input(str(src))
    # MP4 and QuickTime take text subtitles only as mov_text (ffmpeg's default for them), not copied SubRip/ASS.
    subtitles = "mov_text" if dst.suffix.lower() in MOV_FAMILY else "copy"
    options = {"c:a": "copy", "c:s": subtitles, "map_metadata": 1, "map_chapters": 1} | video_options
    # Matroska attachments (the fonts that styled ASS subtitles need) go along where the output can hold them.
    attachments = [source["t?"]] if dst.suffix.lower() in MATROSKA else []
    # Of a multiplex, the enhanced video's own program's sound and subtitles.
    program = f"p:{source_video['program']['program_id']}:" if source_video.get("program") else ""
    cmd = ffmpeg.output(video["v"], source[f"{program}a?"], source[f"{program}s?"], *attachments, str(dst),
                        **options).compile()
    # The output's name is the command's last word; the options ffmpeg-python cannot say go before it.
    extra = _extra_args(src, source_video["input_streams"], source_video, dst, folder)
    return cmd[:1] + FFMPEG_QUIET + ["-y"] + cmd[1:-1] + extra + cmd[-1:]
