"""Run the decoder over overlapping tiles and keep each tile's interior, so large frames fit in memory.

The estimator always sees the whole frame; only the decoder is tiled.  A tile's border pixels lack
context, so each tile is decoded with ``overlap`` extra pixels on every side and only its interior is
kept.  The decoder's attention pools over the tile rather than the frame, so tiled output can differ from
untiled output by a little (bounded in the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Decode = Callable[[np.ndarray], np.ndarray]


def decode_tiled(decode: Decode, x: np.ndarray, tile: tuple[int, int] | None, overlap: int, min_side: int) -> np.ndarray:
    """``decode`` maps [N,1,h,w] -> [N,1,h,w]; returns the whole [N,1,H,W] frame."""
    h, w = x.shape[-2:]
    if tile is None or (tile[0] >= h and tile[1] >= w):
        return decode(x)
    step_h, step_w = (max(t - 2 * overlap, min_side) for t in tile)
    out = np.empty_like(x)
    for top in range(0, h, step_h):
        bottom = min(top + step_h, h)
        y0, y1 = max(top - overlap, 0), min(bottom + overlap, h)
        y0 = min(y0, max(0, y1 - min_side))  # an edge tile still meets the network's minimum size
        for left in range(0, w, step_w):
            right = min(left + step_w, w)
            x0, x1 = max(left - overlap, 0), min(right + overlap, w)
            x0 = min(x0, max(0, x1 - min_side))
            piece = decode(np.ascontiguousarray(x[..., y0:y1, x0:x1]))
            out[..., top:bottom, left:right] = piece[..., top - y0 : bottom - y0, left - x0 : right - x0]
    return out
