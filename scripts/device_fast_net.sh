#!/usr/bin/env bash
# On the device machine: issue 7's network change in one call, speed first (docs/performance.md).
#  1. Where a frame's time goes: profile_parts.py on the shipped network and on the two candidates
#     (train/configs/unshuffle2.json, the half-resolution UNet; light_finest.json, the light finest level),
#     at 1080p, each part replayed as a CUDA graph.
#  2. Each network as the torch-compile backend runs it (bench.py variant 3) at 1080p and 2160p; the candidates
#     untrained (their time does not depend on the weights).
#  3. CANDIDATE transplanted from the shipped weights and distilled for MINUTES (default 2.5, fewer where the
#     call's DEADLINE_S, default 550 s from its start, leaves less) by device_refine.sh at QP 22/32/42, its
#     weights in $OUT for results.md's evaluation on the CPU.  Unless CANDIDATE names one
#     (unshuffle2 or light_finest), the light network if step 2 timed it at the targets (1080p >= 240 and 2160p
#     >= 60 frames/s: it keeps more of the shipped weights and learnt faster on a CPU, docs/training.md step 37),
#     else the half-resolution one (the faster).
# Each step under its own limit (one that fails or runs out is logged, the next runs); the tables in
# $OUT/speed.md, the log in $OUT/log.txt (the tool returns 8 files at most).
# Needs .carry/refine and .carry/whl from scripts/device_pack.sh.
#
#   bash scripts/device_fast_net.sh [MINUTES [TRAIN_ARG ...]]
#   device tool: command "bash scripts/device_fast_net.sh", carry [".carry/refine", ".carry/whl"], timeout_s 570
set -uo pipefail
minutes=${1:-2.5}
extra=("${@:2}")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/device_env.sh" .carry/whl
cd "$root"
shopt -s nullglob  # a table a failed step did not write is left out of speed.md, not an error (device_env.sh sets -e)
step() {  # step SECONDS COMMAND...: run it under a limit; a failure is logged, not fatal
    echo "== $(date +%T) ${*:2}"
    timeout "$1" "${@:2}" || echo "== step ended with status $? (124: out of time): ${*:2}"
}
networks=(shipped: unshuffle2:--model-config=train/configs/unshuffle2.json
          light:--model-config=train/configs/light_finest.json)
sizes=${SIZES:-1920x1080,3840x2160}  # a CPU rehearsal: SIZES=256x144
tables=$(mktemp -d)
{
    for n in "${networks[@]}"; do
        step 60 python3 scripts/profile_parts.py ${n#*:} --size "${sizes%%,*}" --out "$tables/parts_${n%%:*}.md"
    done
    for n in "${networks[@]}"; do
        step 90 python3 scripts/bench.py ${n#*:} --variants 3 --budget-s 60 --cpu-size '' --sizes "$sizes" \
            --out "$tables/bench_${n%%:*}.md"
    done
    for f in "$tables"/*.md; do printf '\n## %s\n\n' "$(basename "$f" .md)"; cat "$f"; done > "$out/speed.md"
} 2>&1 | tee -a "$out/log.txt"
# The light network where its compiled 1080p and 2160p rows reach the targets, else the half-resolution one.
candidate=${CANDIDATE:-}
if [ -z "$candidate" ]; then
    candidate=$(python3 - "$tables/bench_light.md" <<'PY'
import re, sys
from pathlib import Path
table = Path(sys.argv[1]).read_text() if Path(sys.argv[1]).exists() else ""
fps = {m[1]: float(m[2]) for m in re.finditer(r"^\| [^|]+ \| (\d+x\d+) \|(?: [^|]+ \|){3} ([\d.]+) \|", table, re.M)}
print("light_finest" if fps.get("1920x1080", 0) >= 240 and fps.get("3840x2160", 0) >= 60 else "unshuffle2")
PY
)
fi
# What the call has left (SECONDS counts from the start of this script) sets the distillation's minutes: about
# 2 minutes go to the screens, the encodes, the transplant, validation and the weights.
left=$((${DEADLINE_S:-550} - SECONDS))
if ((left >= 150)); then
    minutes=$(python3 -c "print(round(min($minutes, ($left - 120) / 60), 2))")
    echo "== $(date +%T) distilling $candidate for $minutes minutes ($left s left)" | tee -a "$out/log.txt"
    # Its own log: device_refine.sh writes $out/log.txt too.
    timeout "$((left - 10))" env QPS=22,32,42 bash "$here/device_refine.sh" "$minutes" \
        --model-config "train/configs/$candidate.json" --mirror-copies 1 --lr 3e-4 "${extra[@]}" \
        || echo "== distillation ended with status $? (124: out of time)" | tee -a "$out/log.txt"
else
    echo "== $(date +%T) no distillation: $left s left of the call" | tee -a "$out/log.txt"
fi
