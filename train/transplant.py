"""Start a faster decoder from a trained full-resolution one: the half-resolution decoder
(``input_unshuffle`` = 2, ``half_resolution_from``) or the light finest level (``light_finest``,
``light_finest_from``).

The half-resolution UNet's levels are the full one's levels below the first: its level i has the channels
of the full one's level i + 1, at the same scale of the frame.  So every weight carries over except the
two that touch the frame (the head's convolution, now 4 unshuffled planes in, and the tail, 4 planes out)
and the full one's finest up-fusion, which has no counterpart.  Those two convolutions are fitted by least
squares on real decoded crops: the head to what the full decoder's second level computes from the frame
(its first convolution, before the activation), then the tail to the full decoder's residual.  So the
transplanted decoder starts close to the full one, and distillation (stage 3 with ``--mirror-weight``, whose
teacher is the full model) teaches the rest (docs/training.md, step 12).

The light decoder keeps every weight of the full one but its finest level's residual unit and fusion (Z-CBAM,
reduction, residual unit): its head convolution is fitted (before the activation, which is invertible) to what
the full head gives after its residual unit, and its tail to the full decoder's residual (step 37).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..model.blocks import LEAKY_SLOPE
from ..model.diffqe import DiffQE

# Ridge on the normal equations, relative to their mean diagonal: keeps the solve stable where features are
# nearly collinear (a 3x3 window of smooth content) without pulling the fit measurably away from least squares.
RIDGE = 1e-6


def _moved(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    """The tensors under prefix OLD, renamed to prefix NEW."""
    return {new + k.removeprefix(old): v for k, v in state.items() if k.startswith(old)}


def _fit_conv3x3(conv: torch.nn.Conv2d, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Set CONV (3x3, zero padding 1) to the least-squares map from INPUTS [N,Cin,H,W] to TARGETS
    [N,Cout,H,W]; returns the fit's residual as a fraction of the targets' variance."""
    x = F.unfold(inputs.double(), 3, padding=1).transpose(1, 2).reshape(-1, conv.in_channels * 9)
    x = torch.cat([x, x.new_ones(len(x), 1)], dim=1)
    y = targets.double().flatten(2).transpose(1, 2).reshape(-1, conv.out_channels)
    gram = x.T @ x
    gram += RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram, x.T @ y)
    conv.weight.copy_(solution[:-1].T.reshape_as(conv.weight))
    conv.bias.copy_(solution[-1])
    return float(((x @ solution - y).square().mean() / y.var(dim=0).mean()).item())


def _check_crops(crops: torch.Tensor, multiple: int) -> None:
    """The fits run the student's UNet on the crops unpadded: their sides must be multiples of its grid."""
    if crops.shape[-1] % multiple or crops.shape[-2] % multiple:
        raise ValueError(f"crop sides must be multiples of {multiple}, got {tuple(crops.shape[-2:])}")


@torch.no_grad()
def half_resolution_from(full: DiffQE, crops: torch.Tensor) -> tuple[DiffQE, dict[str, float]]:
    """A DiffQE with ``input_unshuffle`` 2 and the decoder levels of FULL below its first; the estimator
    (and the encoder, if FULL has one) as they are.  CROPS [N,1,H,W] in [0,1] (decoded luma, sides a
    multiple of 8) are what the new head and tail are fitted on; returns the model and each fit's
    unexplained share of variance."""
    cfg = full.cfg
    if cfg.input_unshuffle != 1 or len(cfg.decoder_channels) < 3:
        raise ValueError(f"needs a full-resolution decoder of 3 or more levels, got input_unshuffle "
                         f"{cfg.input_unshuffle} and decoder_channels {cfg.decoder_channels}")
    _check_crops(crops, 8)
    full = full.eval()
    half = DiffQE(replace(cfg, input_unshuffle=2, decoder_channels=cfg.decoder_channels[1:])).eval()
    old = full.state_dict()
    state = {k: v for k, v in old.items() if not k.startswith("decoder.")}
    # head = conv, act, residual unit; down[i] = max-pool, conv, act, residual unit.
    state |= _moved(old, "decoder.down.0.3.", "decoder.head.2.")
    for i in range(1, len(cfg.decoder_channels) - 1):
        state |= _moved(old, f"decoder.down.{i}.", f"decoder.down.{i - 1}.")
    # up[j] fuses level L-2-j: the half UNet keeps all but the last, which fused the full level.
    for j in range(len(cfg.decoder_channels) - 2):
        state |= _moved(old, f"decoder.up.{j}.", f"decoder.up.{j}.")
    missing, unexpected = half.load_state_dict(state, strict=False)
    assert not unexpected and sorted(missing) == sorted(
        f"decoder.{k}" for k in ("head.0.weight", "head.0.bias", "tail.weight", "tail.bias")
    ), (missing, unexpected)

    big, small = full.decoder, half.decoder
    z = full.estimate(crops)
    first = big.down[0][1](big.down[0][0](big.head(crops)))  # the full decoder's level 2 before its activation
    head_error = _fit_conv3x3(small.head[0], F.pixel_unshuffle(crops, 2), first)
    residual = big(crops, z) - crops  # flat crops give 0, which the tail should give there too
    tail_error = _fit_conv3x3(small.tail, small.features(crops, z), F.pixel_unshuffle(residual, 2))
    return half, {"head_unexplained": head_error, "tail_unexplained": tail_error}


def _leaky_inverse(y: torch.Tensor) -> torch.Tensor:
    """The input of blocks.act() that gives Y."""
    return torch.where(y >= 0, y, y / LEAKY_SLOPE)


@torch.no_grad()
def light_finest_from(full: DiffQE, crops: torch.Tensor) -> tuple[DiffQE, dict[str, float]]:
    """A DiffQE with ``light_finest`` and every weight of FULL it has; its head and tail convolutions fitted
    on CROPS [N,1,H,W] in [0,1] (decoded luma, sides a multiple of the UNet's).  Returns the model and each
    fit's unexplained share of variance."""
    cfg = full.cfg
    if cfg.light_finest:
        raise ValueError("the starting decoder's finest level is already light")
    full = full.eval()
    light = DiffQE(replace(cfg, light_finest=True)).eval()
    _check_crops(crops, light.cfg.pad_multiple)
    last = len(cfg.decoder_channels) - 2  # up[last] fuses the finest level
    dropped = ("decoder.head.2.", f"decoder.up.{last}.cbam.", f"decoder.up.{last}.reduce.")
    missing, unexpected = light.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(k.startswith(dropped) for k in unexpected), (missing, unexpected)

    big, small = full.decoder, light.decoder
    z = full.estimate(crops)
    head_error = _fit_conv3x3(small.head[0], crops, _leaky_inverse(big.head(crops)))
    residual = big(crops, z) - crops
    tail_error = _fit_conv3x3(small.tail, small.features(crops, z), residual)
    return light, {"head_unexplained": head_error, "tail_unexplained": tail_error}
