#!/usr/bin/env bash
# On the device machine (one GPU, no network): the next GPU refinement of docs/training.md, in one call.
# Needs .carry/refine and .carry/whl from scripts/device_pack.sh.  Codes the corpus at QP 22-42 on every
# core, refines the shipped weights on the GPU in fp32 for MINUTES (default 6), and leaves the fp16 weights
# and the log in $OUT (device_env.sh).
#
#   bash scripts/device_refine.sh [MINUTES [TRAIN_ARG ...]]
#   device tool: command "bash scripts/device_refine.sh 6", carry [".carry/refine", ".carry/whl"], timeout_s 540
#
# Extra train.py arguments override the defaults below (argparse keeps the last); QPS=22,32,42 codes fewer pairs.
minutes=${1:-6}
extra=("${@:2}")
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" .carry/whl
# The corpus's synthetic screens, drawn here from the seed (device_pack.sh leaves them out of the carry).
refine=$root/.carry/refine
if [ -f "$refine/screens.args" ]; then
    python3 "$root/scripts/make_corpus.py" $(cat "$refine/screens.args") --out "$refine/screens"
    for split in train val; do cp "$refine/screens/$split"/*.png "$refine/corpus/$split/"; done
fi
QPS=${QPS:-22,27,32,37,42} bash "$root/scripts/refine_recipe.sh" "$root/model/weights/diffqe" "$refine" "$minutes" \
    0.5 0.5 --flips 4 --mirror-weight 1 --mirror-gate --harm-weight 16 --precision fp32 --batch 16 --patch 128 \
    --val-every 1000 --val-images 21 \
    "${extra[@]}" 2>&1 | tee -a "$out/log.txt"
cp "$refine"/diffqe.* "$out/"
