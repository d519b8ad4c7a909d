"""Temporal fusion for intra-coded video: each frame's output becomes a weighted mean with its neighbours' outputs.

All-intra coding codes every frame on its own, so where the scene stands still the coding error differs from
frame to frame and a mean of the per-frame outputs cancels part of it (MFQE's premise); where the scene moves,
fades or carries its own noise, a mean blurs or flattens what the reference has.  Which is which cannot be told
by a threshold on the decoded frames' difference (docs/results.md, "Averaging over frames"), so a small network
learns it from synthetic video (train.motion): per 8x8 block and neighbouring frame k, from the difference of
the decoded blocks, the block's own texture and level and the frame pair's noise level, the weight in [0, 1]
that frame k's output gets in frame t's mean.  The decoded frames decide, not the outputs, so the weights do not
depend on the decoder's backend.  Guards at inference (STILL, MOVED) keep the network out of motion, and finer
joins (FINE_SHARE) take in the 4x4 pieces that stand still between moving ones.  Only between intra-coded
pictures: in random-access streams a still background is coded as skipped blocks, which model.temporal already
settles.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .files import SHIPPED_FUSION
from .temporal import clip_windows

BLOCK = 8  # the weights' grid: HEVC's smallest coding block
RADIUS = 2  # neighbours on each side that a frame's mean may take in
# Guards on the network, for inference.  A neighbour joins only where its decoded block and the 8 around it
# differ from this frame's by a mean squared error below STILL (8-bit code values squared, RMS 4): without it the
# network, trained on synthetic video, averaged small clips in motion at QP 22-27 (-3.4 dB on one); the value was
# chosen among 16/32/64 on the validation clips and confirmed on held-out synthetic video: at 32 its worst video
# loses ten times what it does at 8 or 16 (scripts/calibrate_fusion.py --still; docs/results.md, "Temporal fusion").
STILL = 16.0
# ... and where that difference does not look like motion: a least-squares fit of it over the 3x3 blocks to an
# offset and this frame's level and gradients (a small shift, a change of light) explains less than MOVED of its
# energy.  Coding noise is not explained by them; slow motion, which at QP 22 differs by less than STILL, is.
# MOVED lets 95 % of the truly still blocks of synthetic training video through (scripts/calibrate_fusion.py).
MOVED = 0.4
# Finer joins beside the network's: a 4x4 block (the smallest transform of HEVC and of the codecs before it) joins
# where its decoded difference is below FINE_SHARE times that pair's 25th percentile of such differences.  Sources
# that an earlier codec coded with skipped blocks stand still in 4x4 pieces between pieces that move (a tree in
# the wind), which no 8x8 block with calm neighbours covers; a quarter of the typical difference asks for a
# population clearly quieter than the rest of the frame.  FINE_SHARE is the largest of 0.25/0.5/0.75/1 with which
# no synthetic calibration video loses 0.01 dB against the network alone (scripts/calibrate_fusion.py --fine).
FINE = 4
FINE_SHARE = 0.25


class FusionNet(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = width
        channels = 2 * BLOCK * BLOCK + 2  # the blocks' difference, the block's texture, its level, the noise level
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, frame: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """Decoded planes in [0,1] (H, W multiples of BLOCK): frames t [B,1,H,W] (or one [1,1,H,W] for all) and
        neighbours k [B,1,H,W] -> [B,1,H/BLOCK,W/BLOCK] weights of k's output in t's mean."""
        blocks = F.pixel_unshuffle(frame * 255, BLOCK)  # 8-bit code values whatever the bit depth
        diff = F.pixel_unshuffle(other * 255, BLOCK) - blocks
        level = blocks.mean(1, keepdim=True)
        energy = diff.square().mean(1).flatten(1)  # [B, blocks]: each block's mean squared difference
        noise = torch.log(torch.quantile(energy, 0.25, dim=1) + 0.01)  # what coding alone changes, per pair
        b, _, h, w = diff.shape
        x = torch.cat([diff / 4, ((blocks - level) / 32).expand(b, -1, -1, -1), (level / 128 - 1).expand(b, -1, -1, -1),
                       noise[:, None, None, None].expand(b, 1, h, w) / 4], 1)
        return torch.sigmoid(self.body(x))


def fuse(net: FusionNet, decoded: torch.Tensor, outputs: torch.Tensor, centre: int,
         still: float | None = STILL, moved: float = MOVED, fine: float = FINE_SHARE) -> torch.Tensor:
    """Frame CENTRE's fused output from a window of decoded planes and per-frame outputs, [K,1,H,W] in [0,1]
    (any H, W) -> [1,1,H,W]: its own output plus each neighbour's weighted by ``net``, over the weights' sum.
    ``guard`` with STILL and MOVED limits the weights, and ``fine_joins`` with FINE adds whole weights on a finer
    grid (STILL None: the network's own, as it is trained; FINE 0: none)."""
    others = [k for k in range(len(decoded)) if k != centre]
    if not others:
        return outputs[centre:centre + 1]
    h, w = decoded.shape[-2:]
    pad = (0, -w % BLOCK, 0, -h % BLOCK)
    dec = F.pad(decoded, pad, mode="replicate")
    frame, neighbours = dec[centre:centre + 1], dec[others]
    weights = net(frame, neighbours)
    if still is not None:
        # Both guards' measures from one pass over the planes: the 8x8 blocks' means are those of their 4x4 blocks.
        codes = frame * 255
        fine_moments = Moments.of(codes, (neighbours - frame) * 255, FINE)
        weights = weights * _guard(fine_moments.pooled(BLOCK // FINE), still, moved)
    weights = F.interpolate(weights, scale_factor=BLOCK, mode="bilinear", align_corners=False)[..., :h, :w]
    if still is not None and fine > 0:
        joins = _fine_joins(fine_moments, _flat(codes), fine, moved).float()
        weights = torch.maximum(weights, F.interpolate(joins, scale_factor=FINE, mode="nearest")[..., :h, :w])
    return (outputs[centre] + (weights * outputs[others]).sum(0, keepdim=True)) / (1 + weights.sum(0, keepdim=True))


@dataclass(frozen=True)
class Moments:
    """Block means of what ``motion_share`` fits, as channels.  FRAME [1,9,h,w]: of the frame's three terms (its
    level and horizontal and vertical gradients), then of their products 00, 01, 02, 11, 12, 22.  DIFF [K,5,h,w]: of
    the difference (neighbours minus the frame), of its products with the terms and of its square.  Means over
    larger blocks are means of these (``pooled``), so one pass over the planes serves both grids."""
    frame: torch.Tensor
    diff: torch.Tensor

    @classmethod
    def of(cls, frame: torch.Tensor, diff: torch.Tensor, block: int) -> Moments:
        """From FRAME [1,1,H,W] and DIFF [K,1,H,W] in code values, over BLOCK x BLOCK blocks (H, W multiples)."""
        gx = F.pad((frame[..., 2:] - frame[..., :-2]) / 2, (1, 1))  # central differences, 0 on the edge
        gy = F.pad((frame[..., 2:, :] - frame[..., :-2, :]) / 2, (0, 0, 1, 1))
        terms = torch.cat([frame / 64, gx, gy], 1)  # scaled alike (with the offset's 1): one ridge term suits all
        mean = partial(F.avg_pool2d, kernel_size=block)  # each product pooled as made: full planes are large
        return cls(torch.cat([mean(terms), *(mean(terms[:, i:i + 1] * terms[:, i:]) for i in range(3))], 1),
                   torch.cat([mean(diff), *(mean(terms[:, k:k + 1] * diff) for k in range(3)), mean(diff.square())], 1))

    def pooled(self, factor: int) -> Moments:
        """The same means over blocks FACTOR times larger."""
        return Moments(F.avg_pool2d(self.frame, factor), F.avg_pool2d(self.diff, factor))

    @property
    def energy(self) -> torch.Tensor:
        """The difference's mean square, [K,1,h,w]."""
        return self.diff[:, 4:]


# The least-squares fit's 4x4 matrix of sums over [1, FRAME's 9 channels] (the offset's row first).
GRAM = [0, 1, 2, 3,
        1, 4, 5, 6,
        2, 5, 7, 8,
        3, 6, 8, 9]


def guard(frame: torch.Tensor, others: torch.Tensor, still: float = STILL, moved: float = MOVED) -> torch.Tensor:
    """Decoded planes [1,1,H,W] and [K,1,H,W] in [0,1] (H, W multiples of BLOCK) -> [K,1,H/BLOCK,W/BLOCK]: 1 where
    each neighbour may join, 0 where not (see STILL and MOVED)."""
    return _guard(Moments.of(frame * 255, (others - frame) * 255, BLOCK), still, moved)


def _guard(moments: Moments, still: float, moved: float) -> torch.Tensor:
    quiet, share = _screen(moments, still)
    return (quiet & (share < moved)).float()


def screen(frame: torch.Tensor, others: torch.Tensor, still: float = STILL) -> tuple[torch.Tensor, torch.Tensor]:
    """``guard``'s two measures, [K,1,H/BLOCK,W/BLOCK] each: where the blocks pass the STILL check (bool), and the
    share of their difference that motion explains (``motion_share``)."""
    return _screen(Moments.of(frame * 255, (others - frame) * 255, BLOCK), still)


def _screen(moments: Moments, still: float) -> tuple[torch.Tensor, torch.Tensor]:
    return calm(moments.energy < still), _explained(moments)


def fine_joins(frame: torch.Tensor, others: torch.Tensor, share: float = FINE_SHARE,
               moved: float = MOVED) -> torch.Tensor:
    """Decoded planes [1,1,H,W] and [K,1,H,W] in [0,1] (H, W multiples of FINE) -> [K,1,H/FINE,W/FINE] bool: the
    4x4 blocks where each neighbour joins whatever the network says.  A block joins where its mean squared
    difference is below SHARE times the pair's 25th percentile over the blocks that count, and the motion test
    (``motion_share`` on this grid, below MOVED) passes.  Blocks that count differ at all (bit-identical blocks
    carry the same coding error: nothing to cancel) and are not flat in this frame (flat planes, a black frame
    above all, come back exact, and a mean with a neighbour's output could only move them)."""
    codes = frame * 255
    return _fine_joins(Moments.of(codes, (others - frame) * 255, FINE), _flat(codes), share, moved)


def _flat(frame: torch.Tensor) -> torch.Tensor:
    """FRAME's 4x4 blocks of one value."""
    return F.max_pool2d(frame, FINE) == -F.max_pool2d(-frame, FINE)


def _fine_joins(moments: Moments, flat: torch.Tensor, share: float, moved: float) -> torch.Tensor:
    energy = moments.energy
    counts = (energy > 0) & ~flat
    typical = torch.nanquantile(energy.masked_fill(~counts, float("nan")).flatten(1), 0.25, dim=1)
    return counts & (energy < share * typical[:, None, None, None]) & (_explained(moments) < moved)


def calm(quiet: torch.Tensor) -> torch.Tensor:
    """QUIET blocks [K,1,h,w] (bool) whose 8 neighbours are quiet too."""
    return -F.max_pool2d(-quiet.float(), 3, 1, 1) > 0


def motion_share(frame: torch.Tensor, diff: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """The share of the energy of DIFF (neighbours minus FRAME, [K,1,H,W], code values) over each block's 3x3
    blocks that a least-squares fit to an offset and FRAME's level and horizontal and vertical gradients explains:
    the first-order terms of a small shift and of a change of light.  [K,1,H/block,W/block] in [0, 1]."""
    return _explained(Moments.of(frame, diff, block))


def _explained(m: Moments) -> torch.Tensor:
    """``motion_share`` from block means.  FRAME's terms serve every neighbour, so each costs three products."""
    def local(blocks: torch.Tensor) -> torch.Tensor:  # block means -> their mean over the block and its 8 neighbours
        return F.avg_pool2d(F.pad(blocks, (1, 1, 1, 1), mode="replicate"), 3, 1)

    frame, diff = local(m.frame), local(m.diff)
    gram = torch.cat([torch.ones_like(frame[:, :1]), frame], 1)[:, GRAM].permute(0, 2, 3, 1).unflatten(-1, (4, 4))
    ridge = 1e-3 * torch.eye(4, dtype=gram.dtype, device=gram.device)  # flat blocks have no gradient
    inverse = torch.linalg.inv_ex(gram + ridge).inverse  # [1,h,w,4,4]; _ex: no check, which waits for the GPU
    fit = diff[:, :4].permute(0, 2, 3, 1)[..., None]  # [K,h,w,4,1]
    return (fit.transpose(-2, -1) @ inverse @ fit)[..., 0, 0][:, None] / (diff[:, 4:] + 1e-6)


def load(stem: Path = SHIPPED_FUSION, device: torch.device | str = "cpu") -> FusionNet:
    """The network saved as STEM.safetensors with its STEM.json (scripts/train_fusion.py), in eval mode on
    DEVICE."""
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path in (weights, meta):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; train the fusion with scripts/train_fusion.py")
    net = FusionNet(width=json.loads(meta.read_text())["width"])
    net.load_state_dict(load_file(str(weights)))
    # PyTorch loads its CUDA linear algebra (motion_share's inverse) on first use, and two threads doing so at
    # once fail (pytorch/pytorch#90613): here, before the filter's frame threads use it.
    torch.linalg.inv_ex(torch.eye(4, device=device))
    return net.to(device).eval()


_streams = threading.local()


def _own_stream(device: torch.device) -> contextlib.AbstractContextManager:
    """This thread's high-priority CUDA stream on DEVICE, as the current stream; nothing on the CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    if not hasattr(_streams, "stream"):
        _streams.stream = torch.cuda.Stream(device, priority=-1)
    return torch.cuda.stream(_streams.stream)


@torch.no_grad()
def fuse_window(net: FusionNet, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], centre: int,
                peak: float, moved: float = MOVED, fine: float = FINE_SHARE, still: float = STILL) -> np.ndarray:
    """``fuse`` on planes, on the device NET is on: a window of decoded input and per-frame output planes
    (integer code values up to PEAK, or float with PEAK 1) -> frame CENTRE's fused output [H,W], rounded to the
    planes' integer type.  On the GPU each calling thread (the filter's frame threads) works on a stream of its
    own, of high priority: on the default stream its small kernels and copies would wait behind every frame a
    backend has queued there."""
    device = next(net.parameters()).device
    with _own_stream(device):
        dec, out = (torch.from_numpy(np.stack(p)).to(device).float().div_(peak)[:, None] for p in (inputs, outputs))
        y = fuse(net, dec, out, centre, still, moved, fine)[0, 0].cpu().numpy() * np.float32(peak)
    dtype = outputs[centre].dtype
    return y.astype(dtype) if np.issubdtype(dtype, np.floating) else np.rint(y).astype(dtype)


def fuse_clip(net: FusionNet, inputs: np.ndarray, outputs: np.ndarray, radius: int = RADIUS,
              peak: float = 255, moved: float = MOVED, fine: float = FINE_SHARE, still: float = STILL) -> np.ndarray:
    """[T,H,W] all-intra decoded input and per-frame output -> each frame fused over the frames within RADIUS
    (clipped at the clip's ends)."""
    return np.stack([fuse_window(net, inputs[a:b], outputs[a:b], n - a, peak, moved, fine, still)
                     for n, (a, b) in enumerate(clip_windows(len(inputs), radius))])
