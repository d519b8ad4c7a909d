#!/usr/bin/env bash
# On the device machine: issue 7's proposed network change, trained and timed in one call (docs/training.md,
# step 12).  The half-resolution network (train/configs/unshuffle2.json) is transplanted from the shipped
# weights and distilled from their plain output for MINUTES (default 4) by device_refine.sh, then bench.py
# times it (CUDA graphs and torch.compile at 1080p and 2160p) beside the shipped network.  Weights, tables and
# log in $OUT.  Needs .carry/refine and .carry/whl from scripts/device_pack.sh.
#
#   bash scripts/device_fast_net.sh [MINUTES [TRAIN_ARG ...]]
#   device tool: command "bash scripts/device_fast_net.sh 4", carry [".carry/refine", ".carry/whl"], timeout_s 570
set -euo pipefail
minutes=${1:-4}
extra=("${@:2}")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Sourced, so that the environment it installs (device_env.sh: $root, $out, PYTHONPATH) serves bench.py too.
source "$here/device_refine.sh" "$minutes" --model-config "$here/../train/configs/unshuffle2.json" --mirror-copies 1 \
    --lr 3e-4 "${extra[@]}"
cd "$root"
for named in "half=$out/diffqe" "shipped=model/weights/diffqe"; do
    python3 scripts/bench.py --checkpoint "${named#*=}" --variants 2,3 --budget-s 100 --cpu-size "${CPU_SIZE:-}" \
        --sizes "${SIZES:-1920x1080,3840x2160}" --out "$out/bench_${named%%=*}.md" 2>&1 | tee -a "$out/log.txt"
done
