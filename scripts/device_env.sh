# Sourced on the device machine (no network) by device_refine.sh and device_bench.sh: installs the project
# and the wheels that scripts/device_pack.sh put in the folders named as arguments into a fresh folder
# on PYTHONPATH (their console scripts on PATH), and sets $out: the tool's $OUT, or ./device-out where OUT
# is unset (a rehearsal on the CPU).  Logs go to $out/log.txt as well as the tool's output.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out=${OUT:-$root/device-out}
mkdir -p "$out"
if [ -z "${DEVICE_SITE:-}" ]; then  # once per call: a script that sources this runs others that source it too
    DEVICE_SITE=$(mktemp -d)
    wheels=()
    for folder in "$@"; do wheels+=("$root/$folder"/*.whl); done
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$DEVICE_SITE" "$root" \
        "${wheels[@]}"
    export DEVICE_SITE PYTHONPATH="$DEVICE_SITE" PATH="$DEVICE_SITE/bin:$PATH" PYTHONUNBUFFERED=1 PYTHON=python3
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 \
        | tee "$out/log.txt"
fi
