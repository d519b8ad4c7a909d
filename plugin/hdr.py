"""HDR10 static metadata: the mastering display's primaries and luminance and the content light levels that
tell a display how to map PQ video.  Colour tags alone do not carry them; x265 writes them as SEI messages."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import ffmpeg

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
