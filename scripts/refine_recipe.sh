#!/usr/bin/env bash
# The CPU steps of the shipped model's training (docs/training.md says why): a refinement of weights from
# train_recipe.sh on the corpus's level, soft and recompressed copies, flat frames, screens and every third
# other photo, at QP 22/32/42, with the dPSNR loss, reconstruction only (--z-weight 0: shipped weights carry no
# encoder).  Writes OUT/corpus, OUT/subset (links), OUT/pairs, OUT/run and the fp16 weights OUT/diffqe.
#
#   bash scripts/refine_recipe.sh INIT OUT [MINUTES [SOFT_FRACTION [RECOMPRESSED_FRACTION [TRAIN_ARG ...]]]]
#
# Step 2 ran with fractions 0 0 (levels only, 24 minutes), step 3 with 0.5 0 from step 2's weights, step 4
# with 0.5 0.5 from step 3's (30 minutes each), step 9 as step 4 from step 4's weights, 40 minutes, with the
# extra train.py arguments --flips 4 --mirror-weight 1.  QPS=22,27,32,37,42 codes the pairs at other QPs (the
# GPU refinement of scripts/device_refine.sh); CODED=0.5 adds copies through earlier video codecs (step 14),
# SOFT_SCREENS=0.5 soft copies of the synthetic screens (step 17), SHIFTED_SCREENS=1 copies of them shifted by
# a fraction of a pixel (step 18), UPSCALED_SCREENS=1 copies brought back up to size with a sharp kernel (step 30),
# OVERTYPED_SCREENS=0.5 copies with lines of text drawn over each other (step 33), FAINT_SCREENS=1 copies with
# lines of faint text (step 34),
# SCREEN_LEVELS=1 copies of the screens and of those copies at other levels (step 27);
# SCREENS=0.2 makes a fifth of the corpus synthetic screens (default: make_corpus.py's, a tenth); PHOTOS_EVERY=1
# trains on each of the other photos, not every third (step 32).
# Rerunning the same command resumes.
set -euo pipefail
init=$1 out=$2 minutes=${3:-30} soft=${4:-0.5} recompressed=${5:-0.5} every=${PHOTOS_EVERY:-3}
extra=("${@:6}")
[[ "$every" =~ ^[1-9][0-9]*$ ]] || { echo "refine_recipe.sh: PHOTOS_EVERY must be a whole number of 1 or more, got '$every'" >&2; exit 2; }
py=${PYTHON:-python}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ -f "$out/corpus/manifest.json" ] || $py "$here/make_corpus.py" --debian --max-side 768 --soft-fraction "$soft" \
    ${SCREENS:+--screen-fraction "$SCREENS"} \
    --recompressed-fraction "$recompressed" --coded-fraction "${CODED:-0}" \
    --soft-screen-fraction "${SOFT_SCREENS:-0}" --shifted-screen-fraction "${SHIFTED_SCREENS:-0}" \
    --upscaled-screen-fraction "${UPSCALED_SCREENS:-0}" --overtyped-screen-fraction "${OVERTYPED_SCREENS:-0}" \
    --faint-screen-fraction "${FAINT_SCREENS:-0}" \
    --screen-levels-fraction "${SCREEN_LEVELS:-0}" --out "$out/corpus" ${DEBIAN_CACHE:+--debian-cache "$DEBIAN_CACHE"}

# Every copy, flat and screen, and every PHOTOS_EVERY-th other photo (sorted by name, from the PHOTOS_EVERY-th);
# all of val.
rm -rf "$out/subset" && mkdir -p "$out/subset/train" "$out/subset/val"
ln -s "$(realpath "$out/corpus/val")"/*.png "$out/subset/val/"
n=0
for f in "$(realpath "$out/corpus/train")"/*.png; do
    case "$(basename "$f")" in
        *_levels.png | *_soft.png | *_recompressed.png | *_coded.png | flat_* | screen_*) ln -s "$f" "$out/subset/train/" ;;
        *) if [ $((n++ % every)) -eq $((every - 1)) ]; then ln -s "$f" "$out/subset/train/"; fi ;;
    esac
done

$py "$here/make_pairs.py" --corpus "$out/subset" --out "$out/pairs" --qps "${QPS:-22,32,42}"
$py "$here/train.py" --pairs "$out/pairs/manifest.json" --run "$out/run" --stage 3 --init "$init" --z-weight 0 \
    --loss dpsnr --lr 1e-4 --batch 12 --patch 64 --minutes "$minutes" --val-every 500 --val-images 24 "${extra[@]}"
$py "$here/ship_checkpoint.py" "$out/run/stage3" --out "$out/diffqe"
