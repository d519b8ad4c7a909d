"""Temporal stabilisation: where the decoded input stands still, the output must stand still too.

The decoder sees one frame at a time, so where a codec re-codes a block of a static scene a little differently
from one frame to the next, the decoder's output moves around that block by more than the block did
(docs/results.md, "Static scenes").  Here each pixel's output becomes the mean of the per-frame outputs over
the frames within RADIUS that *settle* it: its input value is bit-identical to this frame's, and no pixel of
the 8x8 blocks within REACH blocks of it differs by more than one (8-bit) code value.  The same input in the
same scene deserves the same output, so the mean only settles what the decoder left undecided around a
re-coded block.  Motion, grain and cuts change blocks by more and keep each frame's own output; in a fade,
only the pixels that have not yet moved are averaged (averaging the ones that have would blur the fade's
steps: -0.14 dB); most of all-intra video passes unchanged.  Not recursive: frame t depends on the inputs
and per-frame outputs of frames t-RADIUS..t+RADIUS alone, so seeking gives the same frame as playing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK = 8  # HEVC's smallest coding block: the grid on which a codec re-codes
REACH = 2  # blocks around a pixel that must be calm: 16 px, about the reach of a re-coded block's effect


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """[..., H, W] bool -> True where any pixel within r (a square) of the same plane is True."""
    if r == 0:
        return mask
    count = mask.astype(np.int32)
    for axis in (-2, -1):
        widths = [(0, 0)] * count.ndim
        widths[axis] = (r + 1, r)
        c = np.cumsum(np.pad(count, widths), axis=axis)
        n = c.shape[axis]
        count = c.take(range(2 * r + 1, n), axis=axis) - c.take(range(0, n - 2 * r - 1), axis=axis)
    return count > 0


def _blocks(mask: np.ndarray) -> np.ndarray:
    """[H,W] bool with H, W multiples of BLOCK -> [H/BLOCK, W/BLOCK] bool: any pixel of the block set."""
    h, w = mask.shape
    rows = mask.view(np.uint64) != 0  # eight neighbouring bools are one 64-bit word: [H, W/8]
    return rows.reshape(h // BLOCK, BLOCK, w // BLOCK).any(axis=1)


def _differs(a: np.ndarray, b: np.ndarray, tolerance: float) -> np.ndarray:
    """[H,W] bool: |A - B| > TOLERANCE."""
    if a.dtype.kind == "u":  # |a - b| > t  <=>  (a - b + t) mod 2^bits > 2t: no widening copy
        t = a.dtype.type(tolerance)
        return a - b + t > 2 * t
    return np.abs(a - b) > tolerance


def settled(a: np.ndarray, b: np.ndarray, tolerance: float, reach: int = REACH) -> np.ndarray | None:
    """[H,W] bool: where planes A and B (H, W multiples of BLOCK) are identical and no pixel of the blocks within
    REACH blocks differs by more than TOLERANCE; None where no block is calm (motion: the common case, cheap)."""
    far = _differs(a, b, tolerance)
    calm = ~dilate(_blocks(far), reach)
    if not calm.any():
        return None
    h, w = a.shape
    # Widen calm to pixel columns first: broadcasting over rows of W is 9x faster than over 8-wide blocks.
    calm_columns = np.repeat(calm, BLOCK, axis=1)[:, None, :]
    return ((a == b).reshape(h // BLOCK, BLOCK, w) & calm_columns).reshape(h, w)


def stabilise(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], centre: int,
              tolerance: float) -> np.ndarray:
    """Frame CENTRE's output [H,W] from a window of input and per-frame output planes (same order, same dtype):
    per pixel, the mean output over the frames that settle it (module docstring), rounded to the planes'
    integer type (float planes stay float).  TOLERANCE: one 8-bit code value in the planes' units."""
    x, y = inputs[centre], outputs[centre]
    h, w = x.shape
    pad = ((0, -h % BLOCK), (0, -w % BLOCK))
    grid = (lambda p: np.pad(p, pad, mode="edge")) if any(e for _, e in pad) else (lambda p: p)
    xg = grid(x)
    masks = [(yi, m[:h, :w]) for i, (xi, yi) in enumerate(zip(inputs, outputs))
             if i != centre and (m := settled(grid(xi), xg, tolerance)) is not None]
    if not masks:  # nothing settled (motion, all-intra): the frame's own output
        return y.copy()
    # Masked sums as products with the mask: a ufunc's where= runs 10-20x slower than the arithmetic.
    count = np.ones(x.shape, np.min_scalar_type(len(inputs)))  # integer sums: exact at any radius
    if np.issubdtype(x.dtype, np.floating):  # sum deviations from y, so that equal outputs average to y exactly
        deviation = np.zeros(x.shape, np.float32)
        for yi, same in masks:
            deviation += (yi - y) * same
            count += same
        return (y + deviation / count).astype(x.dtype)
    total = y.astype(np.min_scalar_type(len(inputs) * np.iinfo(x.dtype).max))
    for yi, same in masks:
        total += yi * same
        count += same
    mean = np.divide(total, count, dtype=np.float32)  # integers below 2^24: as exact as summing in float32
    return np.rint(mean, out=mean).astype(x.dtype)


def stabilise_clip(inputs: np.ndarray, outputs: np.ndarray, radius: int, tolerance: float = 1.0) -> np.ndarray:
    """[T,H,W] decoded input and per-frame output -> the stabilised output, each frame from its window of
    RADIUS frames either side (clipped at the clip's ends).  TOLERANCE as in ``stabilise`` (8-bit: 1)."""
    if radius == 0:
        return outputs
    windows = [(max(0, n - radius), min(len(inputs), n + radius + 1)) for n in range(len(inputs))]
    return np.stack([stabilise(inputs[a:b], outputs[a:b], n - a, tolerance) for n, (a, b) in enumerate(windows)])
