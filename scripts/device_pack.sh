#!/usr/bin/env bash
# Here (no GPU needed): what the device machine's calls need and cannot download there, in .carry/ (ignored
# by git): .carry/whl the PyAV wheel (x265) for Python 3.12; .carry/refine the shipped recipe's corpus (the
# Debian photos with level, soft and recompressed copies, 30 % synthetic screens with their soft, shifted,
# upscaled, overtyped and faint copies and those at other levels: refine_recipe.sh's corpus of step 36, but
# photos at most MAX_SIDE=448 px so that it travels beside the wheel) for device_refine.sh; .carry/vs
# VapourSynth's wheel for device_bench.sh; .carry/source BestSource's wheel and two clips encoded here for
# device_source.sh.  The screens are drawn from the seed alone, so they do not travel:
# .carry/refine/screens.args holds make_corpus.py's arguments that draw the same ones there.
# Each call carries the folders its script names, with the tracked tree under the tool's 64 MiB.
#
#   bash scripts/device_pack.sh
set -euo pipefail
py=${PYTHON:-python}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$here/../.carry"
mkdir -p "$carry/whl" "$carry/vs"
screen_copies=(--soft-screen-fraction 1 --shifted-screen-fraction 1 --upscaled-screen-fraction 1
    --overtyped-screen-fraction 0.5 --faint-screen-fraction 1 --screen-levels-fraction 1)
if [ ! -f "$carry/refine/corpus/manifest.json" ]; then
    $py "$here/make_corpus.py" --debian --max-side "${MAX_SIDE:-448}" --soft-fraction 0.5 --recompressed-fraction 0.5 \
        --screen-fraction 0.3 "${screen_copies[@]}" --out "$carry/refine/corpus" \
        --debian-cache "${DEBIAN_CACHE:-data/debian}"
    screens=$($py -c 'import json, sys; print(sum(e["source"] == "synthetic screen"
        for e in json.load(open(sys.argv[1]))["images"]))' "$carry/refine/corpus/manifest.json")
    echo "--screens $screens ${screen_copies[*]} --flat 0" > "$carry/refine/screens.args"
    rm "$carry/refine/corpus"/{train,val}/screen_*.png  # the manifest still lists them
fi
wheel() {  # wheel FOLDER NAME==VERSION: a Python 3.12 x86-64 wheel, as the device machine runs
    ls "$1"/"${2%%==*}"-"${2##*==}"-*.whl >/dev/null 2>&1 || $py -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 -d "$1" "$2"
}
wheel "$carry/whl" "av==$($py -c 'import av; print(av.__version__)')"
wheel "$carry/vs" "vapoursynth==$($py -c 'import vapoursynth; print(vapoursynth.__version__.release_major)')"
version() { $py -c "import importlib.metadata as m; print(m.version('$1'))"; }
# bench_vspipe.py imports diffqe.plugin.cli, which builds ffmpeg commands with ffmpeg-python (pure Python, needs future)
wheel "$carry/vs" "ffmpeg-python==$(version ffmpeg-python)"
wheel "$carry/vs" "future==$(version future)"
# device_source.sh: BestSource's wheel and the clips it indexes, encoded here (PyAV's x265 does not travel with them)
mkdir -p "$carry/source"
wheel "$carry/source" "vapoursynth-bestsource==$(version vapoursynth-bestsource)"
for clip in 1920x1080:600 3840x2160:200; do  # the sample's pan (smooth: little to decode) and ffmpeg's testsrc2 (busy)
    size=${clip%%:*} frames=${clip##*:}
    [ -f "$carry/source/$size.mkv" ] || $py "$here/bench_source.py" --size "$size" --frames "$frames" \
        --save "$carry/source/$size.mkv" >&2
    [ -f "$carry/source/busy_$size.mkv" ] || ffmpeg -v error -f lavfi -i "testsrc2=s=$size:r=25" -frames:v $((frames / 2)) \
        -c:v libx265 -preset fast -crf 28 -x265-params log-level=error "$carry/source/busy_$size.mkv"
done

# What travels: the tracked tree and the carried folders, 64 MiB in all; keep 2 MiB spare for untracked files.
tree=$(cd "$here/.." && git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for call in "device_refine.sh: refine whl" "device_bench.sh: whl vs" "device_source.sh: vs source"; do
    size=$tree
    for folder in ${call#*: }; do size=$((size + $(du -sb "$carry/$folder" | cut -f1))); done
    echo "device_pack: ${call%%:*} travels with $((size >> 20)) MiB (the device tool carries 64 MiB)" >&2
    [ $((size >> 20)) -le 62 ] || { echo "device_pack: too large to travel; remove what a CPU rehearsal left in" \
        ".carry/refine (pairs, subset, run) or rebuild the corpus with a lower MAX_SIDE" >&2; exit 1; }
done
