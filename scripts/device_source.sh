#!/usr/bin/env bash
# On the device machine: what BestSource's index pass (one decode of the whole input before its first frame) adds
# to a job on its 16 cores, for the clips scripts/device_pack.sh encoded into .carry/source (x265 CRF 28: the
# sample's pan, 1080p 600 frames and 2160p 200, and ffmpeg's busier testsrc2, half as many) with BestSource's
# wheel; PyAV does not travel.  About a minute.
#
#   device tool: command "bash scripts/device_source.sh", carry [".carry/vs", ".carry/source"], timeout_s 240
source "$(dirname "${BASH_SOURCE[0]}")/device_env.sh" .carry/vs .carry/source
vapoursynth config >&2  # BestSource is a VapourSynth plugin: the runtime configuration finds it
cd "$root"
{
    for clip in 1920x1080 busy_1920x1080; do
        python3 scripts/bench_source.py --input ".carry/source/$clip.mkv" --enhance-fps 76,119,240
    done
    for clip in 3840x2160 busy_3840x2160; do
        python3 scripts/bench_source.py --input ".carry/source/$clip.mkv" --enhance-fps 20,25,60
    done
} 2>&1 | tee -a "$out/log.txt"
