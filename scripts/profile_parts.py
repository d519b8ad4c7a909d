#!/usr/bin/env python3
"""Where a frame's time goes: the estimator and each part of the decoder timed alone on its real inputs.

One forward pass records what every part receives (the estimator; the decoder's head, each down level, each
up-fusion's up-sampling, Z-CBAM and reduction; the tail); then each part runs alone on those inputs, replayed
as a CUDA graph on the GPU (so launches do not count; the whole model is timed the same way), and is listed
with its FLOPs, the least bytes it moves (its inputs read once, its output written once), its time, its rates,
and on the GPU its floor against bench.py's ceilings.  The parts' sum against the whole shows the glue
(padding, concatenation).  Weights do not change the time: --model-config times an untrained network.

  python scripts/profile_parts.py [--checkpoint STEM | --model-config JSON] [--size 1920x1080] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from _common import run
from bench import ceilings, load_network, median_seconds
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffqe.model.diffqe import DiffQE, default_noise
from diffqe.plugin.torch_runner import CudaGraph


def parts(model: DiffQE) -> dict[str, nn.Module]:
    """The estimator, then the decoder's parts in the order a frame meets them."""
    dec = model.decoder
    found = {"estimator": model.estimator} if model.uses_z else {}
    found["decoder.head"] = dec.head
    found |= {f"decoder.down.{i}": m for i, m in enumerate(dec.down)}
    for i, up in enumerate(dec.up):
        found |= {f"decoder.up.{i}.{name}": m for name, m in up.named_children()}
    found["decoder.tail"] = dec.tail
    return found


@torch.inference_mode()
def recorded_inputs(model: DiffQE, modules: dict[str, nn.Module], y: torch.Tensor,
                    noise: torch.Tensor) -> dict[str, tuple]:
    """What each module receives on one forward pass of Y."""
    inputs: dict[str, tuple] = {}

    def keeper(name: str) -> Callable[[nn.Module, tuple], None]:
        def keep(_module: nn.Module, args: tuple) -> None:  # returns None: the module's input stays as it is
            inputs.setdefault(name, args)
        return keep

    hooks = [m.register_forward_pre_hook(keeper(name)) for name, m in modules.items()]
    try:
        model(y, noise)
    finally:
        for h in hooks:
            h.remove()
    return inputs


def timed(fn: Callable[..., torch.Tensor], args: tuple) -> float:
    """Median seconds of fn(*args); on the GPU replayed as a captured graph (None arguments stay None)."""
    if not torch.cuda.is_available():
        return median_seconds(lambda: fn(*args), warmup=1, iters=5)
    slots = [i for i, a in enumerate(args) if a is not None]

    def call(*tensors: torch.Tensor) -> torch.Tensor:
        full = list(args)
        for i, t in zip(slots, tensors):
            full[i] = t
        return fn(*full)

    graph = CudaGraph(call, *(args[i] for i in slots))
    return median_seconds(graph.graph.replay, warmup=3, iters=50)


def count(fn: Callable[..., torch.Tensor], args: tuple) -> tuple[float, float]:
    """(FLOPs, least bytes: the tensor arguments read once, the output written once) of fn(*args)."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    tensors = [a for a in args if isinstance(a, torch.Tensor)] + [out]
    return float(counter.get_total_flops()), float(sum(t.numel() * t.element_size() for t in tensors))


@torch.inference_mode()
def profile(model: DiffQE, h: int, w: int, device: str, dtype: torch.dtype) -> list[tuple[str, float, float, float]]:
    """(part, FLOPs, least bytes, seconds) per part, then the whole model."""
    y = torch.rand(1, 1, h, w, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    noise = default_noise(model.cfg.z_dim).to(device, dtype)
    modules = parts(model)
    inputs = recorded_inputs(model, modules, y, noise)
    rows = [(name, *count(m, inputs[name]), timed(m, inputs[name])) for name, m in modules.items()]
    return rows + [("whole model", *count(model, (y, noise)), timed(model, (y, noise)))]


def markdown(rows: list[tuple[str, float, float, float]], h: int, w: int,
             peaks: tuple[float, float] | None) -> list[str]:
    whole = rows[-1][3]
    head = "| part | GFLOP | MB in + out | ms | share | TFLOP/s | GB/s |" + (" floor/measured |" if peaks else "")
    lines = [f"Frame {w}x{h}.", "", head, "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if peaks else "")]
    summed = ("sum of the parts", sum(r[1] for r in rows[:-1]), sum(r[2] for r in rows[:-1]),
              sum(r[3] for r in rows[:-1]))
    for name, flops, nbytes, seconds in rows[:-1] + [summed, rows[-1]]:
        line = (f"| {name} | {flops / 1e9:.3f} | {nbytes / 1e6:.1f} | {seconds * 1e3:.3f} | {seconds / whole:.1%} | "
                f"{flops / seconds / 1e12:.1f} | {nbytes / seconds / 1e9:.0f} |")
        if peaks:
            line += f" {max(flops / peaks[1], nbytes / peaks[0]) / seconds:.1%} |"
        lines.append(line)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="default: the shipped weights")
    source.add_argument("--model-config", type=Path, help="JSON with ModelConfig fields: an untrained network")
    ap.add_argument("--size", action="append", help="WxH, repeatable (default 1920x1080)")
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    model = load_network(args.checkpoint, args.model_config).to(device, dtype).to(memory_format=torch.channels_last)
    peaks = None
    if cuda:
        torch.backends.cudnn.benchmark = True
        peaks = ceilings()
    name = torch.cuda.get_device_name() if cuda else "CPU"
    lines = [f"Device: {name}, {dtype}, channels-last, batch 1, {'CUDA graphs' if cuda else 'eager'}; "
             f"network: {args.model_config or args.checkpoint or 'shipped weights'}."]
    if peaks:
        lines[0] += f" Ceilings: copy {peaks[0] / 1e12:.2f} TB/s, fp16 matrix product {peaks[1] / 1e12:.0f} TFLOP/s."
    for size in args.size or ["1920x1080"]:
        w, h = (int(v) for v in size.split("x"))
        lines += [""] + markdown(profile(model, h, w, device, dtype), h, w, peaks)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    print(f"profiled {args.size or ['1920x1080']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
