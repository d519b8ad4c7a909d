#!/usr/bin/env bash
# On the device machine: issue 7's measurements in one call.  Needs .carry/whl and .carry/vs from
# scripts/device_pack.sh.  In order of what matters, each step under its own time limit (a step that fails
# or runs out is reported and the next one runs): the CUDA tests (tests/test_cuda.py: parity, fp16 cost,
# frames queued from many threads); the bare torch backend with and without cuDNN's algorithm timing;
# bench_vspipe.py (the pipeline against the bare backend) at 1080p with `torch` and `torch-compile`, with the
# frames marked intra (the temporal fusion on the GPU) and at 2160p; the fusion alone (bench_fusion.py, with
# its profile of a window); bench.py's compiled variant with frames batched (BATCH, default 4); `torch-compile`
# through vspipe on 4 and 8 of VapourSynth's threads.  Tables and log in $OUT.
#
#   bash scripts/device_bench.sh
#   device tool: command "bash scripts/device_bench.sh", carry [".carry/whl", ".carry/vs"], timeout_s 560
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" .carry/whl .carry/vs
vapoursynth config >&2  # vspipe needs its runtime configuration for this Python
cd "$root"
step() {  # step SECONDS COMMAND...: run it under a limit; a failure is logged, not fatal
    echo "== $(date +%T) ${*:2}"
    timeout "$1" "${@:2}" || echo "== step ended with status $? (124: out of time): ${*:2}"
}
# The torch backend alone on 1080p 8-bit planes, frames/s, with cuDNN's algorithm timing on or off (argv[1])
bare='import sys; sys.path.insert(0, "scripts")
from bench_vspipe import bare_fps, sample_frames
from diffqe.plugin.backends import Backend
on = sys.argv[1] == "on"
fps = bare_fps(Backend.TORCH(cudnn_benchmark=on), sample_frames(1920, 1080), 300)
print(f"bare torch 1920x1080, cudnn_benchmark={on}: {fps:.2f} frames/s")'
{
    step 150 python3 -m pytest -q -s -p no:cacheprovider tests/test_cuda.py
    step 40 python3 -c "$bare" off
    step 40 python3 -c "$bare" on
    step 90 python3 scripts/bench_vspipe.py --backend torch --size 1920x1080 --frames 600 --temporal 2
    step 120 python3 scripts/bench_vspipe.py --backend torch-compile --size 1920x1080 --frames 1200 --temporal 2
    step 90 python3 scripts/bench_vspipe.py --backend torch --size 1920x1080 --frames 300 --intra
    step 60 python3 scripts/bench_fusion.py --sizes 1920x1080,3840x2160 --threads 16 --frames 96 --profile
    step 90 python3 scripts/bench_vspipe.py --backend torch --size 3840x2160 --frames 200 --temporal 2
    step 120 python3 scripts/bench.py --variants 3 --batch "${BATCH:-4}" --sizes 1920x1080,3840x2160 --cpu-size '' \
        --budget-s 90 --out "$out/bench_batch.md"
    for threads in 4 8; do  # fewer frame threads than cores: less passing of the GIL
        step 90 python3 scripts/bench_vspipe.py --backend torch-compile --size 1920x1080 --frames 1200 --temporal 2 \
            --threads "$threads"
    done
} 2>&1 | tee -a "$out/log.txt"
