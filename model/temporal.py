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
SPARSE = 0.4  # below this share of blocks that can change, gathering them beats whole-plane arithmetic


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """[..., H, W] bool -> True where any pixel within r (a square) of the same plane is True."""
    out = mask
    for axis in (mask.ndim - 2, mask.ndim - 1):  # a square is a column of rows: one axis at a time
        grown = out.copy()
        head = (slice(None),) * axis
        for k in range(1, r + 1):  # shifted ORs of bytes: faster than running sums even at r = 16
            grown[head + (slice(k, None),)] |= out[head + (slice(None, -k),)]
            grown[head + (slice(None, -k),)] |= out[head + (slice(k, None),)]
        out = grown
    return out


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


def _block_rows(p: np.ndarray) -> np.ndarray:
    """[H,W] plane (H, W multiples of BLOCK) -> [H/BLOCK, BLOCK, W/BLOCK] block rows, each BLOCK pixels as one
    opaque item (a view where P is contiguous): fancy indexing then moves a block row at a time, 8x fewer items."""
    h, w = p.shape
    row = np.dtype((np.void, BLOCK * p.itemsize))
    return np.ascontiguousarray(p).view(row).reshape(h // BLOCK, BLOCK, w // BLOCK)


def _calm(a: np.ndarray, b: np.ndarray, tolerance: float, reach: int = REACH) -> np.ndarray | None:
    """[H/BLOCK, W/BLOCK] bool: the blocks of planes A and B (H, W multiples of BLOCK) within REACH blocks of
    which no pixel differs by more than TOLERANCE; None where there is none (motion: the common case, cheap)."""
    calm = ~dilate(_blocks(_differs(a, b, tolerance)), reach)
    return calm if calm.any() else None


def _mean(y: np.ndarray, settled: list[tuple[np.ndarray, np.ndarray]], frames: int) -> np.ndarray:
    """Per pixel, the mean of Y and of each (output, mask) pair's output where its mask is set, rounded to Y's
    integer type (float stays float).  FRAMES bounds the pairs + 1."""
    # Masked sums as products with the mask: a ufunc's where= runs 10-20x slower than the arithmetic.
    count = np.ones(y.shape, np.min_scalar_type(frames))  # integer sums: exact at any radius
    if np.issubdtype(y.dtype, np.floating):  # sum deviations from y, so that equal outputs average to y exactly
        deviation = np.zeros(y.shape, np.float32)
        for yi, same in settled:
            deviation += (yi - y) * same
            count += same
        return (y + deviation / count).astype(y.dtype)
    total = y.astype(np.min_scalar_type(frames * np.iinfo(y.dtype).max))
    for yi, same in settled:
        total += yi * same
        count += same
    mean = np.divide(total, count, dtype=np.float32)  # integers below 2^24: as exact as summing in float32
    return np.rint(mean, out=mean).astype(y.dtype)


def stabilise(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], centre: int,
              tolerance: float) -> np.ndarray:
    """Frame CENTRE's output [H,W] from a window of input and per-frame output planes (same order, same dtype):
    per pixel, the mean output over the frames that settle it (module docstring), rounded to the planes'
    integer type (float planes stay float).  TOLERANCE: one 8-bit code value in the planes' units."""
    h, w = inputs[centre].shape
    pad = ((0, -h % BLOCK), (0, -w % BLOCK))
    grid = (lambda p: np.pad(p, pad, mode="edge")) if any(e for _, e in pad) else (lambda p: p)
    xs = [grid(p) for p in inputs]  # on the block grid, once: the calm test and the means both read them
    calms = [(i, c) for i, xi in enumerate(xs) if i != centre and (c := _calm(xi, xs[centre], tolerance)) is not None]
    if not calms:  # nothing settled (motion, all-intra): the frame's own output
        return outputs[centre].copy()
    yg = grid(outputs[centre])
    union = np.logical_or.reduce([c for _, c in calms])
    rows, cols = union.shape
    if union.mean() < SPARSE:  # only the blocks that can change, gathered: [K, BLOCK * BLOCK]
        by, bx = np.nonzero(union)

        def take(p: np.ndarray) -> np.ndarray:
            return _block_rows(p)[by, :, bx].view(p.dtype)

        def flag(calm: np.ndarray) -> np.ndarray:
            return calm[by, bx][:, None]

        def put(mean: np.ndarray) -> np.ndarray:  # the gathered blocks back into a copy of the frame's output
            out = np.array(yg)
            blocks = _block_rows(out)
            blocks[by, :, bx] = mean.view(blocks.dtype)
            return out
    else:  # whole planes as rows of blocks: broadcasting over rows of W is 9x faster than over 8-wide blocks
        def take(p: np.ndarray) -> np.ndarray:
            return p.reshape(rows, BLOCK, cols * BLOCK)

        def flag(calm: np.ndarray) -> np.ndarray:
            return np.repeat(calm, BLOCK, axis=1)[:, None, :]

        def put(mean: np.ndarray) -> np.ndarray:
            return mean.reshape(rows * BLOCK, cols * BLOCK)

    xb = take(xs[centre])
    settled = [(take(grid(outputs[i])), (take(xs[i]) == xb) & flag(c)) for i, c in calms]
    return put(_mean(take(yg), settled, len(inputs)))[:h, :w]


def stabilise_clip(inputs: np.ndarray, outputs: np.ndarray, radius: int, tolerance: float = 1.0) -> np.ndarray:
    """[T,H,W] decoded input and per-frame output -> the stabilised output, each frame from its window of
    RADIUS frames either side (clipped at the clip's ends).  TOLERANCE as in ``stabilise`` (8-bit: 1)."""
    if radius == 0:
        return outputs
    return np.stack([stabilise(inputs[a:b], outputs[a:b], n - a, tolerance)
                     for n, (a, b) in enumerate(clip_windows(len(inputs), radius))])


def clip_windows(frames: int, radius: int) -> list[tuple[int, int]]:
    """Per frame of a clip of FRAMES, the [start, stop) of the frames within RADIUS of it, clipped at the ends."""
    return [(max(0, n - radius), min(frames, n + radius + 1)) for n in range(frames)]
