"""HDR metadata. HDR10's static metadata: the mastering display's primaries and luminance and the content light
levels that tell a display how to map PQ video.  Colour tags alone do not carry them; x265 writes them as SEI
messages.  Dolby Vision's configuration record: what a stream's base layer shows as without the Dolby Vision
metadata, which a re-encode drops."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import ffmpeg

DOLBY_VISION = "DOVI configuration record"
# dv_bl_signal_compatibility_id -> what the base layer is on its own; 0: nothing a display shows right (profile 5's
# IPTPQc2 colour space)
DOLBY_VISION_BASE = {1: "HDR10", 2: "SDR", 4: "HLG", 6: "HDR10"}
MASTERING = "Mastering display metadata"
LIGHT_LEVEL = "Content light level metadata"
_CHROMATICITY, _LUMINANCE = 50000, 10000  # x265's units: 0.00002 and 0.0001 cd/m2


def side_data(src: Path, stream: dict) -> list[dict]:
    """SRC's first frame's side data (where HEVC and AV1 carry HDR10 metadata), then its stream's (Matroska)."""
    try:
        frames = ffmpeg.probe(str(src), select_streams="v:0", read_intervals="%+#1", show_frames=None)["frames"]
    except (ffmpeg.Error, KeyError):
        frames = []
    return [d for f in frames[:1] for d in f.get("side_data_list", [])] + stream.get("side_data_list", [])


def x265_params(side: list[dict]) -> list[str]:
    """x265's master-display and max-cll for the HDR10 metadata in SIDE; [] where it has none."""
    params = []
    display = next((d for d in side if d.get("side_data_type") == MASTERING and "red_x" in d
                    and "max_luminance" in d), None)
    if display:
        xy = {k: round(Fraction(display[k]) * _CHROMATICITY) for k in display if k.endswith(("_x", "_y"))}
        lum = {k: round(Fraction(display[k]) * _LUMINANCE) for k in ("max_luminance", "min_luminance")}
        params.append(f"master-display=G({xy['green_x']},{xy['green_y']})B({xy['blue_x']},{xy['blue_y']})"
                      f"R({xy['red_x']},{xy['red_y']})WP({xy['white_point_x']},{xy['white_point_y']})"
                      f"L({lum['max_luminance']},{lum['min_luminance']})")
    light = next((d for d in side if d.get("side_data_type") == LIGHT_LEVEL), None)
    if light:
        params.append(f"max-cll={light['max_content']},{light['max_average']}")
    return params


def dolby_vision(stream: dict) -> tuple[int, str | None] | None:
    """For a Dolby Vision STREAM (ffprobe's, with its side data): its profile and what its base layer shows as
    without the Dolby Vision metadata (HDR10, SDR, HLG; None where it shows as nothing right); None for others."""
    record = next((d for d in stream.get("side_data_list", []) if d.get("side_data_type") == DOLBY_VISION), None)
    if record is None:
        return None
    return int(record.get("dv_profile", 0)), DOLBY_VISION_BASE.get(int(record.get("dv_bl_signal_compatibility_id", 0)))
