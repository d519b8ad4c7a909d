#!/usr/bin/env python3
"""Export the model to ONNX and build TensorRT engines (cached under engines/).

  python scripts/export_trt.py                          # shipped weights, fp32 + fp16 engines for 1080p
  python scripts/export_trt.py --onnx-only --fp16       # ONNX graphs only (works without a GPU)
  python scripts/export_trt.py --checkpoint runs/full/stage2 --min-shape 240x416 --opt-shape 1080x1920 \\
      --max-shape 2160x3840 --workspace 8 --opt-level 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from diffqe.export.cache import default_engine_dir
from diffqe.export.onnx_export import export_onnx, model_hash
from diffqe.export.trt_build import BuildOptions, Profile, build_engine, import_tensorrt
from diffqe.model import checkpoint


def hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    if not (h.isdigit() and w.isdigit()):
        raise argparse.ArgumentTypeError(f"expected HxW such as 1080x1920, got {text!r}")
    return int(h), int(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="checkpoint stem (default: the shipped weights)")
    ap.add_argument("--output", type=Path, help="engine folder (default: engines/ or $DIFFQE_ENGINE_DIR)")
    ap.add_argument("--onnx-only", action="store_true", help="write the ONNX graphs and stop")
    ap.add_argument("--fp16", action="store_true", help="fp16 graphs and engines (fp32 in and out)")
    ap.add_argument("--fp16-io", action="store_true", help="with --fp16: fp16 inputs and outputs as well")
    ap.add_argument("--min-shape", type=hw, default=(64, 64))
    ap.add_argument("--opt-shape", type=hw, default=(1080, 1920))
    ap.add_argument("--max-shape", type=hw, default=(2160, 3840))
    ap.add_argument("--static", action="store_true", help="one fixed shape: --opt-shape")
    ap.add_argument("--max-batch", type=int, default=1, help="frames per call at most")
    ap.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB")
    ap.add_argument("--opt-level", type=int, default=3, choices=range(6), help="builder optimization level")
    args = ap.parse_args()
    if not args.onnx_only:
        import_tensorrt()  # a clear error before any work when TensorRT or the GPU is missing
    model, meta = checkpoint.load(args.checkpoint)
    engine_dir = args.output or default_engine_dir()
    graphs = export_onnx(model, engine_dir / model_hash(model)[:16], meta=meta, fp16=args.fp16, fp16_io=args.fp16_io)
    for path in (graphs.estimator, graphs.decoder):
        if path:
            print(path)
    if args.onnx_only:
        return 0
    profile = Profile.of(args.min_shape, args.opt_shape, args.max_shape, max_batch=args.max_batch,
                         static=args.static)
    options = BuildOptions("fp16" if args.fp16 else "fp32", args.workspace, args.opt_level)
    for path in (graphs.estimator, graphs.decoder):
        if path:
            print(build_engine(path, engine_dir, profile, options))
    print("engines ready", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run(main)
