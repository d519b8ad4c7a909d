# Sourced by the README's commands: creates or refreshes .venv with the project and its dependencies,
# and makes sure ffmpeg is there.  Idempotent: a second run only compares a stamp.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '%s\n' "$*" >&2; }

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
    local c
    for c in "${DIFFQE_PYTHON:-}" python3.12 python3.13 python3; do
        if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then command -v "$c"; return; fi
    done
    # pyenv installs that are not selected (the python3.12 shim refuses while another version is active)
    local root
    root="$( (pyenv root 2>/dev/null) || echo "$HOME/.pyenv")"
    for c in "$root"/versions/3.1[2-9]*/bin/python3; do
        if [ -x "$c" ] && python_ok "$c"; then echo "$c"; return; fi
    done
    log "error: DiffQE needs Python >= 3.12 (VapourSynth's wheel requires it) and none was found."
    log "  install one, e.g. 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv',"
    log "  or point DIFFQE_PYTHON at its interpreter."
    return 1
}

ensure_ffmpeg() {
    command -v ffmpeg >/dev/null 2>&1 && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ffmpeg from Debian ..."
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >&2
    else
        log "error: ffmpeg is missing; install it with 'sudo apt-get install ffmpeg' (or your system's package manager)."
        return 1
    fi
}

ensure_venv() {
    local stamp want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
    stamp="$VENV/.diffqe-stamp"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && python_ok "$VENV/bin/python"; then
        return
    fi
    local py
    py="$(find_python)"
    if ! python_ok "$VENV/bin/python" 2>/dev/null; then
        log "creating $VENV with $py"
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
    fi
    log "installing DiffQE and its dependencies into $VENV (the first time downloads PyTorch) ..."
    # This workplace's pip config names local mirrors that may be absent: drop pip's warnings about them.
    "$VENV/bin/python" -m pip install -q --upgrade pip 2> >(grep -v 'WARNING: Location' >&2)
    if ! "$VENV/bin/python" -m pip install -q -e "$ROOT[cpu,test,batch]" 2> >(grep -v 'WARNING: Location' >&2); then
        log "error: installing DiffQE's dependencies into $VENV failed (pip's message above)."
        # PyTorch's wheels with their CUDA libraries unpack to about 6 GiB: the usual cause is a full disk.
        log "  free space: $(free_gib "$VENV") GiB under $VENV, $(free_gib "${TMPDIR:-/tmp}") GiB under ${TMPDIR:-/tmp}" \
            "(pip unpacks there); the install needs about 7 GiB. Free some, or point TMPDIR elsewhere, and run it again."
        return 1
    fi
    echo "$want" > "$stamp"
}

free_gib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }

ensure_vspipe() {
    # VapourSynth's wheel needs its runtime configuration written once for this Python before vspipe runs.
    "$VENV/bin/vspipe" --version >/dev/null 2>&1 && return
    "$VENV/bin/vapoursynth" config >&2
}

ensure_ffmpeg
ensure_venv
ensure_vspipe
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
