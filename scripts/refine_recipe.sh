#!/usr/bin/env bash
# Steps 2 and 3 of the shipped model's training (docs/training.md says why): a CPU refinement of weights
# from train_recipe.sh on the corpus's level copies, soft copies, flat frames, screens and every third other
# photo, at QP 22/32/42, with the dPSNR loss, reconstruction only (--z-weight 0: shipped weights carry no
# encoder).  Writes OUT/corpus, OUT/subset (links), OUT/pairs, OUT/run and the fp16 weights OUT/diffqe.
#
#   bash scripts/refine_recipe.sh INIT OUT [MINUTES [SOFT_FRACTION]]
#
# Step 2 ran with SOFT_FRACTION 0 (levels only, 24 minutes), step 3 with 0.5 (30 minutes) from step 2's
# weights.  Rerunning the same command resumes.
set -euo pipefail
init=$1 out=$2 minutes=${3:-30} soft=${4:-0.5}
py=${PYTHON:-python}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ -f "$out/corpus/manifest.json" ] || $py "$here/make_corpus.py" --debian --max-side 768 --soft-fraction "$soft" \
    --out "$out/corpus" ${DEBIAN_CACHE:+--debian-cache "$DEBIAN_CACHE"}

# Every copy, flat and screen, and every third other photo (sorted by name, from the third); all of val.
rm -rf "$out/subset" && mkdir -p "$out/subset/train" "$out/subset/val"
ln -s "$(realpath "$out/corpus/val")"/*.png "$out/subset/val/"
n=0
for f in "$(realpath "$out/corpus/train")"/*.png; do
    case "$(basename "$f")" in
        *_levels.png | *_soft.png | flat_* | screen_*) ln -s "$f" "$out/subset/train/" ;;
        *) if [ $((n++ % 3)) -eq 2 ]; then ln -s "$f" "$out/subset/train/"; fi ;;
    esac
done

$py "$here/make_pairs.py" --corpus "$out/subset" --out "$out/pairs" --qps 22,32,42
$py "$here/train.py" --pairs "$out/pairs/manifest.json" --run "$out/run" --stage 3 --init "$init" --z-weight 0 \
    --loss dpsnr --lr 1e-4 --batch 12 --patch 64 --minutes "$minutes" --val-every 500 --val-images 24
$py "$here/ship_checkpoint.py" "$out/run/stage3" --out "$out/diffqe"
