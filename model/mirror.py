"""Mirror self-ensemble: the decoder run on mirrored copies of a frame, each output mirrored back, averaged.

A mirrored frame carries the same coding damage, so what the decoder restores agrees between the copies; what
it invents (an edge sharpened a little differently, a ring on text) does not and averages away.  That is what
costs the decoder PSNR on high-quality input and screens (docs/results.md, "Mirror ensemble").  One Z serves
every copy: it describes the frame's quality, which mirroring does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a frame is mirrored: the command line reads FLIPS without loading PyTorch
    import torch

# Axes flipped per copy: none; both (the half turn); left-right and up-down.  Two copies take the half turn,
# not left-right: on unseen crisp text at QP 22 it is the copy that disagrees where one pass invents detail
# (docs/results.md, "Mirror ensemble").  Transposes are left out: they change the shape an engine was built
# for, and on three photos the eight copies with them gained at QP 22 what they lost at 42.
FLIPS: dict[int, tuple[tuple[int, ...], ...]] = {1: ((),), 2: ((), (-2, -1)), 4: ((), (-2, -1), (-1,), (-2,))}
# HEVC's smallest coding block: a frame is padded to this grid before mirroring, so that the mirrored copy's
# block edges fall where the decoder saw block edges in training.
GRID = 8


def mirrored(decode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, copies: int) -> Iterator[torch.Tensor]:
    """``decode`` of each of ``copies`` mirrored copies of x [N,1,H,W] (padded to the GRID), mirrored back and
    cropped to x's shape, in float32; one at a time, so that a caller that sums them holds one copy's output."""
    from torch.nn.functional import pad

    h, w = x.shape[-2:]
    padded = pad(x, (0, -w % GRID, 0, -h % GRID), mode="reflect")
    for axes in FLIPS[copies]:
        yield decode(padded.flip(axes)).float().flip(axes)[..., :h, :w]


def mirror_average(decode: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, copies: int) -> torch.Tensor:
    """Mean of ``decode`` over ``copies`` (1, 2 or 4) mirrored copies of x [N,1,H,W]; same shape out."""
    if copies not in FLIPS:
        raise ValueError(f"ensemble must be one of {', '.join(map(str, FLIPS))}, got {copies}")
    if copies == 1:
        return decode(x)
    return sum(mirrored(decode, x, copies)) / copies
