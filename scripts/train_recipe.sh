#!/usr/bin/env bash
# The shipped model's training recipe, end to end, on one GPU (docs/training.md says why each step):
#   x265 all-intra pairs at QP 22/27/32/37/42 -> stage 1 (full and NoEst, side by side)
#   -> stage 2 (full and NoDiff, both on the full model's stage 1) -> stage 3 (joint refinement, both)
#   -> fp16 inference weights OUT/{full,nodiff,noest}.safetensors
#
#   bash scripts/train_recipe.sh CORPUS OUT [STAGE1_MIN STAGE2_MIN STAGE3_MIN]
#
# Budgets are wall-clock minutes per stage (the LR schedule follows them); NoEst trains for all three.
# Rerunning the same command resumes every stage where it stopped.  MODEL_CONFIG=FILE.json trains another
# network (e.g. train/configs/unshuffle2.json, the faster decoder of docs/performance.md).
set -euo pipefail
corpus=$1 out=$2 m1=${3:-60} m2=${4:-20} m3=${5:-20}
py=${PYTHON:-python}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
train() { $py "$here/train.py" --pairs "$out/pairs/manifest.json" --batch 32 --patch 128 --steps 1000000000 \
    --val-every 1000000000 --save-every 1000 --log-every 200 "$@"; }

$py "$here/make_pairs.py" --corpus "$corpus" --out "$out/pairs" --qps 22,27,32,37,42

config=(${MODEL_CONFIG:+--model-config "$MODEL_CONFIG"})
train --run "$out/noest" --stage 1 --variant noest "${config[@]}" --lr 8e-4 --minutes "$(awk "BEGIN {print $m1 + $m2 + $m3}")" &
noest=$!
train --run "$out/full" --stage 1 "${config[@]}" --lr 8e-4 --minutes "$m1"
train --run "$out/nodiff" --stage 2 --variant nodiff --init "$out/full/stage1" --lr 1e-3 --minutes "$m2" &
nodiff=$!
train --run "$out/full" --stage 2 --lr 1e-3 --minutes "$m2"
wait "$nodiff"
train --run "$out/nodiff" --stage 3 --lr 2e-4 --minutes "$m3" &
nodiff=$!
train --run "$out/full" --stage 3 --lr 2e-4 --minutes "$m3"
wait "$nodiff"
wait "$noest"

for run in full/stage3 nodiff/stage3 noest/stage1; do
    $py "$here/ship_checkpoint.py" "$out/$run" --out "$out/${run%%/*}"
done
