#!/usr/bin/env bash
# Here (no GPU needed): what a GPU refinement on the device machine needs and cannot download there, in
# .carry/ (ignored by git, under the device tool's 64 MiB): step 4's corpus (the Debian photos with level,
# soft and recompressed copies, as refine_recipe.sh builds it, but at most MAX_SIDE=448 px so that it travels
# beside the wheel) and the PyAV wheel (x265) for Python 3.12.
#
#   bash scripts/device_pack.sh        # then the device tool: carry [".carry"], command scripts/device_refine.sh
set -euo pipefail
py=${PYTHON:-python}
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
carry="$here/../.carry"
mkdir -p "$carry/whl"
[ -f "$carry/refine/corpus/manifest.json" ] || $py "$here/make_corpus.py" --debian --max-side "${MAX_SIDE:-448}" --soft-fraction 0.5 \
    --recompressed-fraction 0.5 --out "$carry/refine/corpus" --debian-cache "${DEBIAN_CACHE:-data/debian}"
av=$($py -c 'import av; print(av.__version__)')
ls "$carry/whl"/av-"$av"-*.whl >/dev/null 2>&1 || $py -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$carry/whl" "av==$av"
# What travels: the tracked tree and .carry, 64 MiB in all; keep 2 MiB spare for untracked files.
tree=$(cd "$here/.." && git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
size=$(( (tree + $(du -sb "$carry" | cut -f1)) >> 20 ))
echo "device_pack: the working tree and .carry hold ${size} MiB (the device tool carries 64 MiB)" >&2
[ "$size" -le 62 ] || { echo "device_pack: too large to travel; lower MAX_SIDE or empty .carry" >&2; exit 1; }
