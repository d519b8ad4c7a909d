#!/usr/bin/env bash
# On the device machine: issue 7's measurements in one call.  Needs .carry/whl and .carry/vs from
# scripts/device_pack.sh.  bench.py's torch variants (CUDA graphs, torch.compile) at 540p/1080p/2160p with
# the ceilings and the ONNX Runtime CPU figure, then bench_vspipe.py (the pipeline against the bare
# backend) at 1080p and 2160p with the temporal stabilisation on and off, and with the frames marked intra-coded
# (the temporal fusion runs too, as on an all-intra stream); tables and log in $OUT.
#
#   bash scripts/device_bench.sh [BACKEND]       # default torch; SIZES="WxH ..." and FRAMES=N for bench_vspipe
#   device tool: command "bash scripts/device_bench.sh", carry [".carry/whl", ".carry/vs"], timeout_s 480
backend=${1:-torch}
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" .carry/whl .carry/vs
vapoursynth config >&2  # vspipe needs its runtime configuration for this Python
cd "$root"
{
    python3 scripts/bench.py --variants 2,3 --budget-s 200 --out "$out/bench.md"
    for size in ${SIZES:-1920x1080 3840x2160}; do
        for temporal in 2 0; do
            python3 scripts/bench_vspipe.py --backend "$backend" --size "$size" --frames "${FRAMES:-300}" \
                --temporal "$temporal"
        done
        python3 scripts/bench_vspipe.py --backend "$backend" --size "$size" --frames "${FRAMES:-300}" --intra
    done
} 2>&1 | tee -a "$out/log.txt"
