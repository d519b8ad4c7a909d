"""`diffqe batch INPUTS... -o OUTDIR`: many files through the `diffqe enhance` path, resumable, observable,
one file per task on Ray (an embedded local cluster by default, or an existing one with --address).

Each file runs as its own `diffqe enhance` process (a crash or out-of-memory stays with that file), which
writes a hidden partial file and renames it when complete.  OUTDIR/.diffqe-batch.json records each file's
status; a file counts as done only after its output's frames and their span of time match the input's.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import math
import os
import queue
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from ..model.config import MAX_STRENGTH
from ..model.files import atomic_write
from ..model.mirror import FLIPS
from .backends import NAMES, best_name
from .encoder import checked as checked_encoder_options, parse as parse_encoder_options
from .cli import VIDEO_OPTIONS, UserError, check_encoder, is_partial, parse_enhance, partial_path, probe_video
from .timing import video_pts

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".hevc", ".h265", ".265", ".ts", ".m2ts", ".mts", ".webm",
                  ".avi", ".y4m", ".mxf"}
LIST_SUFFIXES = {".txt", ".list", ".lst"}
STATE_NAME = ".diffqe-batch.json"
# Options passed through to every `diffqe enhance`; also the keys a TOML job file may set.
ENHANCE_OPTIONS = (*VIDEO_OPTIONS, "segment_seconds")
BATCH_OPTIONS = ("name", "jobs", "executor", "address", "cpus_per_file", "gpus_per_file", "report")


@dataclass
class Job:
    input: str
    output: str


@dataclass
class Result:
    input: str
    output: str
    status: str = "pending"  # pending | running | done | failed
    frames: int | None = None
    fps: float | None = None
    wall_s: float | None = None
    size_bytes: int | None = None
    error: str | None = None
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)  # what `diffqe enhance` warned of (streams left behind)
    notes: list[str] = field(default_factory=list)  # what else it said (frames the source-QP guard spared)
    backend: str | None = None  # as `diffqe enhance` chose it
    gpu: str | None = None  # the CUDA_VISIBLE_DEVICES it ran with (None: not set, every GPU)


# --------------------------------------------------------------------------------------------- discovery

def _expand(item: str) -> list[tuple[Path, Path]]:
    """(file, path relative to its input root) for one INPUT: a folder (recursive), a glob, a list file
    (one path per line, # comments) or a single file."""
    path = Path(item)
    if glob.has_magic(item):
        root = Path(*[p for p in Path(item).parts[: next(i for i, p in enumerate(Path(item).parts) if glob.has_magic(p))]])
        hits = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        return [(p, p.relative_to(root)) for p in hits]
    if path.is_dir():
        hits = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        return [(p, p.relative_to(path)) for p in hits]
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        files = [Path(ln) if Path(ln).is_absolute() else path.parent / ln for ln in lines if ln and not ln.startswith("#")]
        return [(p, Path(p.name)) for p in files]
    if path.exists():
        return [(path, Path(path.name))]
    raise UserError(f"{item}: no such file, folder or matching files")


def discover(inputs: list[str], outdir: Path, name: str) -> list[Job]:
    """Jobs for every input file; outputs mirror the input tree under OUTDIR, named by the NAME template
    ({stem}, {ext}, {name})."""
    jobs, seen, outdir_real = [], {}, outdir.resolve()
    for item in inputs:
        searched = glob.has_magic(item) or Path(item).is_dir()
        for src, rel in _expand(item):
            src_real = src.resolve()
            if searched and (outdir_real in src_real.parents or any(is_partial(Path(p)) for p in rel.parts)):
                continue  # OUTDIR inside a searched folder, or what a killed job left: outputs, not inputs
            out = outdir / rel.parent / name.format(stem=src.stem, ext=src.suffix, name=src.name)
            out_real = out.resolve()
            if out_real == src_real:
                raise UserError(f"{src}: the output name would overwrite the input; choose another -o or --name")
            if out in seen and seen[out] != src_real:
                raise UserError(f"{seen[out]} and {src} would both write {out}; use --name with {{ext}} or separate runs")
            if out not in seen:
                seen[out] = src_real
                jobs.append(Job(str(src_real), str(out_real)))
    if not jobs:
        raise UserError(f"no video files found in {' '.join(inputs)} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    return jobs


# ------------------------------------------------------------------------------------------ one file

def verify(src: Path, dst: Path) -> str | None:
    """None if DST is a complete enhancement of SRC, else why not: as many video frames as SRC's decoder gives
    (counted from packets, decoded only where SRC's packets count others) spanning the same time."""
    try:
        for path in (src, dst):
            probe_video(path)  # each readable, with a video stream: else ffprobe's reason
    except UserError as e:
        return str(e)
    written, written_unit = video_pts(dst)  # this tool's own encode: one packet per frame
    found = video_pts(src, len(written))
    if found is None:
        return f"{dst} has {len(written)} frames, which is not the number of frames of {src}"

    def span(pts: list[int | None], unit: Fraction) -> Fraction | None:
        return (max(pts) - min(pts)) * unit if pts and None not in pts else None  # None: no times (raw HEVC)

    a, b = span(*found), span(written, written_unit)
    if a is not None and b is not None and abs(a - b) > max(2 * a / max(len(written) - 1, 1), Fraction(1, 20)):
        return f"{dst} spans {float(b):.3f} s of video, the input {float(a):.3f} s"
    return None


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child after fork only calls it
_children: set[subprocess.Popen] = set()  # running `diffqe enhance` processes, stopped if the batch is stopped


def _die_with_parent() -> None:
    """Child side: get SIGTERM when the batch process dies, even by SIGKILL, so no orphan keeps writing."""
    _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def enhance_flags(options: dict) -> list[str]:
    """`diffqe enhance` flags for the OPTIONS that are set."""
    flags = []
    for key in ENHANCE_OPTIONS:
        value = options.get(key)
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:  # not `not in (None, False)`: 0 == False
            flags.append(f"{flag}={value}")  # one word: a value may start with '-' (--encoder-options)
    return flags


def enhance_command(job: Job, options: dict) -> list[str]:
    """The `diffqe enhance` command line for one file."""
    return [sys.executable, "-m", "diffqe.plugin.cli", "enhance", job.input, job.output, "--overwrite",
            "--progress", "json", *enhance_flags(options)]


def check_options(options: dict) -> None:
    """Once before any file: the encoder opens with these options (on 8-bit 4:2:0; each file checks its own)."""
    check_encoder({"pix_fmt": "yuv420p"}, parse_enhance(["enhance", "-", "-", *enhance_flags(options)]))


def visible_gpus() -> list[str]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them (the user's own list where one is set); [] without
    CUDA."""
    count = torch.cuda.device_count()
    named = [name for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name]
    return named[:count] if named else [str(i) for i in range(count)]


def gpu_share(jobs: int, gpus: int) -> float:
    """The share of a GPU each of JOBS files at once gets from GPUS: 1 where there are as many GPUs, else the
    same fraction for all (1/2 for three files on two GPUs: two on one, one on the other; Ray's fractional GPUs
    never split a file over two)."""
    return 1 / math.ceil(jobs / gpus) if gpus else 0.0


def threads_per_file(jobs: int, address: str | None) -> str | None:
    """OMP_NUM_THREADS for each file's process (PyTorch on the CPU follows it): this machine's cores shared
    among the JOBS files that run at once.  Ray sets it to a task's CPUs, 1 by default, which held a file to
    one core; on a cluster (ADDRESS) that is what --cpus-per-file asks for, and the user's own setting wins."""
    if address or "OMP_NUM_THREADS" in os.environ:
        return None
    return str(max(1, (os.cpu_count() or 1) // jobs))


def process_one(job: Job, options: dict, progress: Callable[[dict], None], threads: str | None = None,
                gpu: str | None = None) -> Result:
    """Enhance one file through `diffqe enhance` (its own process; THREADS: its OMP_NUM_THREADS, GPU: its
    CUDA_VISIBLE_DEVICES) and verify the output."""
    result = Result(job.input, job.output, status="failed")
    started = time.monotonic()
    env = os.environ | ({} if threads is None else {"OMP_NUM_THREADS": threads}) | ({} if gpu is None else
                                                                                  {"CUDA_VISIBLE_DEVICES": gpu})
    child = subprocess.Popen(enhance_command(job, options), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, preexec_fn=_die_with_parent, env=env)
    _children.add(child)
    errors = []
    for line in child.stderr:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("stage") == "start":
                result.backend, result.gpu = event["backend"], event["gpu"]
                continue
            if event.get("stage") == "enhance":
                result.frames, result.fps = event["frame"], event["fps"]
            progress({"input": job.input} | event)
        elif line.startswith("warning: "):
            result.warnings.append(line.removeprefix("warning: ").strip())
        elif line.startswith("note: "):
            result.notes.append(line.removeprefix("note: ").strip())
        elif line.strip():
            errors.append(line.strip())
    rc = child.wait()
    _children.discard(child)
    result.wall_s = round(time.monotonic() - started, 3)
    if rc:
        reasons = [e.removeprefix("error: ") for e in errors if e.startswith("error: ")]
        result.error = (reasons or errors or [f"diffqe enhance exited with {rc}"])[-1]
        return result
    problem = verify(Path(job.input), Path(job.output))
    if problem:
        Path(job.output).unlink(missing_ok=True)
        result.error = f"verification failed: {problem}"
        return result
    result.status, result.size_bytes = "done", Path(job.output).stat().st_size
    return result


# ----------------------------------------------------------------------------------------- executors

def _drain(events) -> list[dict]:
    """Everything queued so far (a queue.Queue or a Ray Queue), without waiting."""
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return out


class LocalPool:
    """Files on worker threads of this process, each driving its own `diffqe enhance` process, on GPUS in turn
    (each file takes one of the WORKERS slots spread over them, as Ray's fractional GPUs do)."""

    def __init__(self, workers: int, threads: str | None, gpus: list[str]) -> None:
        self.capacity = workers
        self.threads = threads
        self.events: queue.Queue = queue.Queue()
        self._pool = ThreadPoolExecutor(workers)
        self._slots: queue.Queue | None = queue.Queue() if gpus else None  # one per worker: get() never waits
        for slot in range(workers if gpus else 0):
            self._slots.put(gpus[slot % len(gpus)])

    def submit(self, job: Job, options: dict) -> Future:
        return self._pool.submit(self._process, job, options)

    def _process(self, job: Job, options: dict) -> Result:
        gpu = self._slots.get() if self._slots else None
        try:
            return process_one(job, options, self.events.put, self.threads, gpu)
        finally:
            if self._slots:
                self._slots.put(gpu)

    def finished(self, running: dict, timeout: float) -> list:
        time.sleep(timeout)
        return [f for f in running if f.done()]

    @staticmethod
    def result(handle: Future) -> Result:
        return handle.result()

    def drain(self) -> list[dict]:
        return _drain(self.events)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RayPool:
    """One Ray task per file with its CPU/GPU resources: an embedded local Ray, or the cluster at ADDRESS
    (the inputs and OUTDIR must then be on storage every node mounts at the same path)."""

    def __init__(self, workers: int, address: str | None, cpus_per_file: float, gpus_per_file: float,
                 threads: str | None) -> None:
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'diffqe[batch]' (or use --executor local)") from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, int(workers * cpus_per_file)), num_gpus=None if gpus_per_file else 0,
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        self.capacity = 10**9 if address else workers  # a cluster schedules by resources
        self.threads = threads
        self.events = Queue()
        self._task = ray.remote(num_cpus=cpus_per_file, num_gpus=gpus_per_file, max_retries=0)(_ray_process)

    def submit(self, job: Job, options: dict):
        return self._task.remote(job, options, self.events, self.threads)

    def finished(self, running: dict, timeout: float) -> list:
        ready, _ = self.ray.wait(list(running), num_returns=len(running), timeout=timeout)
        return ready

    def result(self, handle) -> Result:
        return self.ray.get(handle)

    def drain(self) -> list[dict]:
        return _drain(self.events)

    def close(self) -> None:
        self.ray.shutdown()


def _ray_process(job: Job, options: dict, events, threads: str | None) -> Result:
    return process_one(job, options, events.put, threads)


# ------------------------------------------------------------------------------------------- driver

@dataclass
class Progress:
    """Overall bar plus one line per running file on a terminal; JSON lines for farms; or nothing."""

    mode: str  # bar | json | none
    total: int
    done: int = 0
    current: dict = field(default_factory=dict)
    _lines: int = 0

    def event(self, event: dict) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "progress"} | event), file=sys.stderr, flush=True)
        self.current[event["input"]] = event

    def finish(self, result: Result) -> None:
        self.done += 1
        self.current.pop(result.input, None)
        if self.mode == "json":
            print(json.dumps({"event": "file"} | asdict(result)), file=sys.stderr, flush=True)
        elif self.mode == "bar":
            self._clear()
            what = "ok" if result.status == "done" else f"FAILED: {result.error}"
            print(f"[{self.done}/{self.total}] {Path(result.input).name}: {what}", file=sys.stderr)
            for warning in result.warnings:
                print(f"  warning: {warning}", file=sys.stderr)
            for note in result.notes:
                print(f"  note: {note}", file=sys.stderr)

    def render(self) -> None:
        if self.mode != "bar" or not sys.stderr.isatty():
            return
        self._clear()
        frac = self.done / max(self.total, 1)
        lines = [f"batch [{'#' * int(30 * frac)}{'.' * (30 - int(30 * frac))}] {self.done}/{self.total} files"]
        for src, e in self.current.items():
            if e["stage"] == "index":
                lines.append(f"  {Path(src).name[:40]:40s} indexing {e['percent']:3d}% ETA {e['eta']}")
                continue
            total, frame = e["frames"], e["frame"]
            pct = f"{100 * frame / total:5.1f}%" if total else "     "
            lines.append(f"  {Path(src).name[:40]:40s} {pct} {frame} frames {e['fps']:6.1f} fps ETA {e['eta']}")
        print("\n".join(lines), file=sys.stderr, flush=True)
        self._lines = len(lines)

    def _clear(self) -> None:
        if self._lines and sys.stderr.isatty():
            print(f"\x1b[{self._lines}F\x1b[J", end="", file=sys.stderr)
        self._lines = 0


class State:
    """OUTDIR/.diffqe-batch.json: every file's Result, rewritten atomically after each change."""

    def __init__(self, path: Path, jobs: list[Job]) -> None:
        self.path = path
        old = json.loads(path.read_text()).get("files", {}) if path.exists() else {}
        self.files = {j.input: Result(**old[j.input]) if j.input in old else Result(j.input, j.output) for j in jobs}

    def update(self, result: Result) -> None:
        self.files[result.input] = result
        self.save()

    def save(self) -> None:
        doc = {"files": {k: asdict(v) for k, v in self.files.items()}}
        atomic_write(self.path, lambda p: p.write_text(json.dumps(doc, indent=2)))


def run_batch(jobs: list[Job], options: dict, state: State, pool, progress: Progress) -> list[Result]:
    """Finish every job not yet done; returns the final results in input order."""
    todo = []
    for job in jobs:
        partial_path(Path(job.output)).unlink(missing_ok=True)  # left by a killed run
        prior, out = state.files[job.input], Path(job.output)
        # Verified when it was done (the check reads both files through): recorded done at its size, it is kept.
        recorded = prior.status == "done" and out.exists() and prior.size_bytes == out.stat().st_size
        if recorded or (out.exists() and not verify(Path(job.input), out)):
            if prior.status != "done":  # finished and renamed by a run killed before it could record it
                state.update(Result(job.input, job.output, "done", attempts=prior.attempts,
                                    size_bytes=out.stat().st_size))
            progress.done += 1
            continue
        todo.append(job)
    running: dict = {}
    while todo or running:
        while todo and len(running) < pool.capacity:
            job = todo.pop(0)
            prior = state.files[job.input]
            state.update(Result(job.input, job.output, "running", attempts=prior.attempts + 1))
            running[pool.submit(job, options)] = job
        for handle in pool.finished(running, 0.2):
            job = running.pop(handle)
            result = pool.result(handle)
            result.attempts = state.files[job.input].attempts
            state.update(result)
            progress.finish(result)
        for event in pool.drain():
            progress.event(event)
        progress.render()
    return [state.files[j.input] for j in jobs]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="diffqe batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="folders (recursive), globs ('in/**/*.mp4'), list files (.txt) or files")
    ap.add_argument("-o", "--output", required=True, type=Path, help="output root; the input tree is mirrored under it")
    ap.add_argument("--job", type=Path, help="TOML file with any of the options below (the command line wins)")
    ap.add_argument("--name", help="output file name template: {stem}, {ext}, {name} (default {stem}.mkv)")
    ap.add_argument("--executor", choices=("ray", "local"), help="ray (default: embedded local Ray) or local threads")
    ap.add_argument("--address", help="join the Ray cluster at this address (e.g. ray://head:10001 or auto)")
    ap.add_argument("-j", "--jobs", type=int, help="files at once on this machine (default 1)")
    ap.add_argument("--cpus-per-file", type=float, help="Ray CPUs per file (default 1)")
    ap.add_argument("--gpus-per-file", type=float,
                    help="Ray GPUs per file (default: this machine's GPUs shared among --jobs, e.g. 0.5 for two "
                    "files on one GPU, 1 for eight on eight; 0 on a cluster or without GPUs)")
    ap.add_argument("--report", type=Path, help="JSON report (default OUTPUT/diffqe-report.json)")
    ap.add_argument("--progress", choices=("bar", "json", "none"), default="bar",
                    help="progress on stderr: bars, JSON lines for farms, or none")
    ap.add_argument("--quiet", action="store_true", help="same as --progress none")
    for key in ENHANCE_OPTIONS:
        flag = "--" + key.replace("_", "-")
        if key in ("lossless", "no_fusion", "no_qp_guard"):
            ap.add_argument(flag, action="store_true", default=None, help="as for diffqe enhance")
        else:
            kind = (int if key in ("tile", "overlap", "seed", "ensemble", "temporal", "bits")
                    else float if key in ("crf", "strength", "segment_seconds")
                    else checked_encoder_options if key == "encoder_options" else str)
            ap.add_argument(flag, type=kind, choices=tuple(NAMES) if key == "backend" else None,
                            help="as for diffqe enhance")
    args = ap.parse_args(argv)
    defaults = {"name": "{stem}.mkv", "jobs": 1, "executor": "ray", "cpus_per_file": 1.0}
    if args.job:
        try:
            table = tomllib.loads(args.job.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"job file {args.job}: {e}") from None
        unknown = set(table) - set(ENHANCE_OPTIONS) - set(BATCH_OPTIONS)
        if unknown:
            raise UserError(f"job file {args.job}: unknown keys {sorted(unknown)}; known: "
                            f"{', '.join(ENHANCE_OPTIONS + BATCH_OPTIONS)}")
        defaults |= table
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.ensemble is not None and args.ensemble not in FLIPS:  # checked once here, not per file
        raise UserError(f"ensemble must be one of {', '.join(map(str, FLIPS))}, got {args.ensemble}")
    if args.temporal is not None and args.temporal < 0:
        raise UserError(f"temporal must be >= 0 (a radius in frames), got {args.temporal}")
    if args.strength is not None and not 0 <= args.strength <= MAX_STRENGTH:
        raise UserError(f"strength must be between 0 and {MAX_STRENGTH}, got {args.strength}")
    if args.encoder_options is not None:  # from --job's file, which argparse did not check
        try:
            parse_encoder_options(str(args.encoder_options))
        except ValueError as e:
            raise UserError(f"encoder_options: {e}") from None
    if args.quiet:
        args.progress = "none"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = discover(args.inputs, args.output, args.name)
    if args.backend is None and not args.address:  # every file runs here: choose once, not in each file's process
        args.backend = best_name()
    options = {k: getattr(args, k) for k in ENHANCE_OPTIONS}
    check_options(options)
    args.output.mkdir(parents=True, exist_ok=True)
    state = State(args.output / STATE_NAME, jobs)
    threads = threads_per_file(args.jobs, args.address)
    gpus = [] if args.address else visible_gpus()
    if args.gpus_per_file is None:
        args.gpus_per_file = gpu_share(args.jobs, len(gpus))
    pool = (RayPool(args.jobs, args.address, args.cpus_per_file, args.gpus_per_file, threads)
            if args.executor == "ray" else LocalPool(args.jobs, threads, gpus))
    progress = Progress(args.progress, len(jobs))
    try:
        results = run_batch(jobs, options, state, pool, progress)
    finally:  # also on SIGTERM / Ctrl-C: each child removes its partial file; the state says what is left
        for child in list(_children):
            child.terminate()
        pool.close()
    report = args.report or args.output / "diffqe-report.json"
    doc = {"files": [asdict(r) for r in results], "done": sum(r.status == "done" for r in results),
           "failed": sum(r.status == "failed" for r in results)}
    atomic_write(report, lambda p: p.write_text(json.dumps(doc, indent=2)))
    print(f"{doc['done']} of {len(results)} files done, {doc['failed']} failed; report: {report}", file=sys.stderr)
    return 0 if doc["failed"] == 0 else 1
