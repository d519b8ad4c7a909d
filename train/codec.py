"""Real video coding of luma planes through PyAV's encoders (its wheels carry libx265, libx264, SVT-AV1, libvpx
and FFmpeg's MPEG-2): HEVC for the paper's data, the others to measure what the model does to their sources.

Frames are coded as 4:2:0 video with neutral chroma, as a decoder would see them, and only the luma plane
comes back.  All-intra at a fixed quantiser reproduces the paper's data; CRF with the encoder's own GOP gives
the random-access streams that users actually have.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stdout otherwise: errors only


class CodecError(RuntimeError):
    pass


# (qp, crf, intra, preset) -> a codec's encoder options
Options = Callable[[int | None, float | None, bool, str | None], dict[str, str]]


@dataclass(frozen=True)
class Coder:
    """One codec as the evaluation drives it: its PyAV encoder, the raw bitstream format it is written in (and
    read back from), and its options for a fixed quantiser QP on the codec's own scale or a CRF, all-intra or
    random-access."""

    encoder: str
    container: str
    options: Options
    pix_fmts: tuple[str | None, str | None] = ("yuv420p", "yuv420p10le")  # what it codes 8-, 10-bit luma in (None: not)
    min_width: int = 2


def _x26x(option: str, *quiet: str) -> Options:
    """The options of x265 or x264: both take their parameters as one string (OPTION), QUIET keeps them silent."""
    def options(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
        params = [*quiet, f"qp={qp}" if qp is not None else f"crf={crf}"] + ["keyint=1", "min-keyint=1"] * intra
        return {"preset": preset or "medium", option: ":".join(params)}
    return options


def _svtav1(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    # qp and crf on SVT-AV1's 1-63 scale (base_q_idx about 4x that on inter frames, far less on key frames)
    options = {"qp": str(qp)} if qp is not None else {"crf": f"{crf:g}"}
    return options | ({"g": "1"} if intra else {}) | ({"preset": preset} if preset else {})


def _vp9(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    q = {"crf": str(qp), "qmin": str(qp), "qmax": str(qp)} if qp is not None else {"crf": f"{crf:g}"}
    return q | {"b": "0", "deadline": "good", "cpu-used": preset or "4"} | ({"g": "1"} if intra else {})


def _mpeg2(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    """FFmpeg's MPEG-2 and MPEG-4 part 2 encoders alike (the latter what Xvid and DivX wrote)."""
    if qp is None:
        raise CodecError("MPEG-2, MPEG-4 part 2 and MJPEG have no CRF: give them a quantiser (qscale 1-31)")
    return {"qmin": str(qp), "qmax": str(qp), "g": "1" if intra else "12", "bf": "0" if intra else "2"}


def _mjpeg(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    """Motion JPEG (cameras, capture cards): every picture a JPEG at qscale QP; FFmpeg takes limited-range 4:2:0
    only as "unofficial"."""
    return _mpeg2(qp, crf, True, preset) | {"strict": "-1"}


def _prores(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    """ProRes (prores_ks), an intermediate: its QP is the profile, 0-3 (Proxy, LT, 422, HQ)."""
    if qp is None or not 0 <= qp <= 3:
        raise CodecError("ProRes has no CRF or QP: give its profile, 0-3 (Proxy, LT, 422, HQ), as the QP")
    return {"profile": str(qp)}


def _dnxhr(qp: int | None, crf: float | None, intra: bool, preset: str | None) -> dict[str, str]:
    """DNxHR (FFmpeg's dnxhd), Avid's intermediate: its QP is the 8-bit profile, 0-2 (LB, SQ, HQ)."""
    if qp is None or not 0 <= qp <= 2:
        raise CodecError("DNxHR has no CRF or QP: give its 8-bit profile, 0-2 (LB, SQ, HQ), as the QP")
    return {"profile": ("dnxhr_lb", "dnxhr_sq", "dnxhr_hq")[qp]}


# QP on each codec's own scale: x265 and x264 QP; SVT-AV1 and libvpx (VP9, VP8) q 0-63; MPEG-2, MPEG-4, MJPEG qscale;
# ProRes and DNxHR profile
CODERS = {
    "hevc": Coder("libx265", "hevc", _x26x("x265-params", "log-level=error", "info=0")),
    "h264": Coder("libx264", "h264", _x26x("x264-params", "log-level=error")),
    "av1": Coder("libsvtav1", "ivf", _svtav1),
    "vp9": Coder("libvpx-vp9", "ivf", _vp9),
    "vp8": Coder("libvpx", "ivf", _vp9),  # WebM before VP9, WebRTC's calls: libvpx's options are the same
    "mpeg2": Coder("mpeg2video", "mpeg2video", _mpeg2),
    "mpeg4": Coder("mpeg4", "m4v", _mpeg2),
    "mjpeg": Coder("mjpeg", "mjpeg", _mjpeg),
    "prores": Coder("prores_ks", "mov", _prores, (None, "yuv422p10le")),
    "dnxhr": Coder("dnxhd", "mov", _dnxhr, ("yuv422p", None), min_width=256),
}


def encode_video(
    frames: Sequence[np.ndarray],
    *,
    codec: str = "hevc",
    qp: int | None = None,
    crf: float | None = None,
    intra: bool = True,
    bit_depth: int = 8,
    preset: str | None = None,
    fps: int = 25,
) -> bytes:
    """Encode luma planes (uint8 for 8-bit, uint16 for 10-bit; H and W even) to a raw CODEC bitstream (CODERS)."""
    if (qp is None) == (crf is None):
        raise ValueError("give exactly one of qp= or crf=")
    coder = CODERS[codec]
    h, w = frames[0].shape
    if h % 2 or w % 2:
        raise CodecError(f"4:2:0 needs even frame sides, got {w}x{h}")
    if w < coder.min_width:
        raise CodecError(f"{codec} codes frames at least {coder.min_width} pixels wide, got {w}x{h}")
    pix_fmt = coder.pix_fmts[{8: 0, 10: 1}[bit_depth]]
    if pix_fmt is None:
        depth = 10 if bit_depth == 8 else 8
        raise CodecError(f"{codec} codes {depth}-bit pictures only: give {depth}-bit luma")
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    buf = io.BytesIO()
    with av.open(buf, "w", format=coder.container) as out:
        stream = out.add_stream(coder.encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = coder.options(qp, crf, intra, preset)
        for i, y in enumerate(frames):
            frame = _luma_frame(y.astype(dtype), pix_fmt, neutral=1 << (bit_depth - 1))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _luma_frame(y: np.ndarray, pix_fmt: str, neutral: int) -> av.VideoFrame:
    """A PyAV frame of PIX_FMT holding the luma plane Y, its chroma planes (if any) at the NEUTRAL value."""
    frame = av.VideoFrame(y.shape[1], y.shape[0], pix_fmt)
    _write_plane(frame.planes[0], y)
    for chroma in frame.planes[1:]:
        _write_plane(chroma, np.full((chroma.height, chroma.width), neutral, dtype=y.dtype))
    return frame


def _write_plane(plane, data: np.ndarray) -> None:
    """Copy a 2-D array into a PyAV plane, honouring its line stride."""
    dst = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    row = data.view(np.uint8).reshape(data.shape[0], -1)
    dst[:, : row.shape[1]] = row


def decode_luma(bitstream: bytes, codec: str = "hevc") -> list[np.ndarray]:
    """Decode a raw CODEC bitstream (as ``encode_video`` writes it); returns each frame's luma plane (uint8 or
    uint16)."""
    try:
        with av.open(io.BytesIO(bitstream), "r", format=CODERS[codec].container) as inp:
            return [_luma(f) for f in inp.decode(video=0)]
    except av.error.FFmpegError as e:
        raise CodecError(f"{codec} decode failed: {e}") from None


def _luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    high = frame.format.name.endswith(("10le", "12le", "16le"))
    dtype = np.uint16 if high else np.uint8
    row = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return row[:, : plane.width * dtype().itemsize].copy().view(dtype)


def compress_luma(y: np.ndarray, qp: int, *, preset: str = "medium") -> np.ndarray:
    """HEVC all-intra round trip of one 8-bit luma plane at a fixed QP (the paper's training data)."""
    decoded = decode_luma(encode_video([y], qp=qp, intra=True, preset=preset))
    if len(decoded) != 1:
        raise CodecError(f"expected one decoded frame, got {len(decoded)}")
    return decoded[0]


def transcode_luma(y: np.ndarray, codec: str, options: dict[str, str]) -> np.ndarray:
    """One 8-bit luma plane through another encoder (any FFmpeg encoder PyAV carries: mpeg2video, mpeg4,
    libx264, cinepak, ...) as one intra frame in AVI, decoded again: a source that an earlier generation of
    video coding has been through.  The plane is edge-padded to whole 16x16 macroblocks and cropped back."""
    h, w = y.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    padded = np.pad(y, ((0, hp - h), (0, wp - w)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as out:
        stream = out.add_stream(codec, rate=25)
        gray = codec == "cinepak"  # Cinepak codes RGB or grey, not 4:2:0
        stream.width, stream.height, stream.pix_fmt = wp, hp, "gray" if gray else "yuv420p"
        stream.options = options
        out.mux(stream.encode(_luma_frame(padded, stream.pix_fmt, neutral=128)))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf, "r") as inp:
        decoded = next(inp.decode(video=0))
    if decoded.format.name == "rgb24":  # Cinepak's decoder returns its grey as equal R, G and B
        return decoded.to_ndarray()[:h, :w, 0].copy()
    return _luma(decoded)[:h, :w].copy()


def read_video_luma(path, max_frames: int | None = None) -> list[np.ndarray]:
    """Luma planes of a video file (any container/codec FFmpeg reads), in display order."""
    try:
        with av.open(str(path)) as inp:
            if not inp.streams.video:
                raise CodecError(f"{path}: has no video stream")
            frames = []
            for frame in inp.decode(video=0):
                frames.append(_luma(frame))
                if max_frames and len(frames) >= max_frames:
                    break
    except FileNotFoundError:
        raise CodecError(f"{path}: no such file") from None
    except av.error.FFmpegError as e:
        raise CodecError(f"{path}: cannot be decoded ({e}); is it a complete video file?") from None
    if not frames:
        raise CodecError(f"{path}: no decodable video frames")
    return frames
