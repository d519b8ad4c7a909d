#!/usr/bin/env bash
# On the device machine (one GPU, no network): the next GPU refinement of docs/training.md, in one call.
# Needs .carry from scripts/device_pack.sh.  Installs the project and PyAV from .carry, codes the corpus
# at QP 22-42 on every core, refines the shipped weights on the GPU in fp32 for MINUTES (default 6), and
# leaves the fp16 weights and the logs in $OUT (or ./device-out where OUT is unset, e.g. a CPU rehearsal).
#
#   bash scripts/device_refine.sh [MINUTES [TRAIN_ARG ...]]
#   device tool: command "bash scripts/device_refine.sh 6", carry [".carry"], timeout_s 540
#
# Extra train.py arguments override the defaults below (argparse keeps the last).
set -euo pipefail
minutes=${1:-6}
extra=("${@:2}")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.."
out=${OUT:-$root/device-out}
mkdir -p "$out"
site=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" \
    "$root" "$root"/.carry/whl/*.whl
export PYTHONPATH="$site" PYTHONUNBUFFERED=1 PYTHON=python3
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tee "$out/log.txt"
QPS=22,27,32,37,42 bash "$here/refine_recipe.sh" "$root/model/weights/diffqe" "$root/.carry/refine" "$minutes" 0.5 0.5 \
    --flips 4 --mirror-weight 1 --precision fp32 --batch 16 --patch 128 --val-every 1000 --val-images 21 \
    "${extra[@]}" 2>&1 | tee -a "$out/log.txt"
cp "$root"/.carry/refine/diffqe.* "$out/"
