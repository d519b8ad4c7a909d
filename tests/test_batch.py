"""`diffqe batch`: real clips (x265 encodes of the bundled photograph), real vspipe | ffmpeg per file, the
in-process executor and an embedded local Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SAMPLES
from diffqe.plugin.batch import (STATE_NAME, Job, LocalPool, Progress, State, discover, enhance_command, gpu_share,
                                 run_batch, threads_per_file, verify)
from diffqe.plugin.cli import parse_enhance

BATCH_OPTIONS = ["--backend", "ort-cpu", "--lossless", "--progress", "json"]


def batch_cmd(*args) -> list[str]:
    exe = shutil.which("diffqe")
    assert exe, "the project's console script is installed"
    return [exe, "batch", *map(str, args)]


def batch(*args) -> subprocess.CompletedProcess:
    return subprocess.run(batch_cmd(*args), capture_output=True, text=True, timeout=900)


def encode(dst, crf: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "reference.mkv", "-c:v", "libx265",
                    "-x265-params", f"log-level=error:crf={crf}", dst], check=True)


@pytest.fixture
def library(tmp_path):
    """in/a/one.mp4, in/a/deeper/two.mp4, in/b/three.mp4: three real x265 clips in a tree."""
    root = tmp_path / "in"
    for rel, crf in (("a/one.mp4", 30), ("a/deeper/two.mp4", 36), ("b/three.mp4", 24)):
        encode(root / rel, crf)
    return root


def frame_md5s(path) -> list[str]:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [ln.rsplit(",", 1)[1].strip() for ln in out.splitlines() if ln and not ln.startswith("#")]


def report(out) -> dict:
    return {os.path.basename(f["input"]): f for f in json.loads((out / "diffqe-report.json").read_text())["files"]}


def partials(root) -> list:
    return [p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def test_a_corrupt_file_fails_alone(tmp_path, library):
    (library / "b" / "three.mp4").write_bytes(os.urandom(4096))  # corrupt
    out = tmp_path / "out"
    result = batch(library, "-o", out, "--executor", "local", *BATCH_OPTIONS)
    assert result.returncode == 1, result.stderr
    files = report(out)
    assert files["one.mp4"]["status"] == files["two.mp4"]["status"] == "done"
    assert files["one.mp4"]["frames"] == 8 and files["one.mp4"]["size_bytes"] > 0
    assert files["one.mp4"]["backend"] == "ort-cpu"  # as the file's own process chose it
    assert files["three.mp4"]["status"] == "failed"
    assert "three.mp4" in files["three.mp4"]["error"] and "not a readable video" in files["three.mp4"]["error"]
    assert (out / "a" / "one.mkv").is_file() and (out / "a" / "deeper" / "two.mkv").is_file()
    assert not (out / "b" / "three.mkv").exists() and not partials(out)
    assert "Traceback" not in result.stderr
    assert len(frame_md5s(out / "a" / "one.mkv")) == 8


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_batch_resumes_and_does_each_file_once(tmp_path, library, sig):
    out = tmp_path / "out"
    proc = subprocess.Popen(batch_cmd(library, "-o", out, "--executor", "local", *BATCH_OPTIONS),
                            stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stderr:  # wait until the first file is done, then kill the batch mid-way
        if line.startswith("{") and json.loads(line).get("event") == "file":
            first = json.loads(line)["output"]
            break
    assert first, "the batch finished a file before it was killed"
    time.sleep(1.0)  # the second file is now being enhanced
    proc.send_signal(sig)
    proc.wait(timeout=60)
    first_mtime = os.stat(first).st_mtime_ns
    time.sleep(2.0)  # the child of a SIGKILLed batch gets SIGTERM and removes its partial output
    assert not partials(out)

    result = batch(library, "-o", out, "--executor", "local", *BATCH_OPTIONS)
    assert result.returncode == 0, result.stderr
    files = report(out)
    assert all(f["status"] == "done" for f in files.values())
    assert os.stat(first).st_mtime_ns == first_mtime, "a finished file is not redone"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mkv")) == ["a/deeper/two.mkv", "a/one.mkv", "b/three.mkv"]
    assert not partials(out)
    for f in files.values():
        assert len(frame_md5s(f["output"])) == 8


def test_ray_with_two_workers_matches_the_in_process_path(tmp_path, library):
    pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    local, ray = tmp_path / "local", tmp_path / "ray"
    a = batch(library / "a", "-o", local, "--executor", "local", *BATCH_OPTIONS)
    b = batch(library / "a", "-o", ray, "--executor", "ray", "--jobs", "2", *BATCH_OPTIONS)
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    names = ["one.mkv", "deeper/two.mkv"]
    for name in names:
        assert frame_md5s(local / name) == frame_md5s(ray / name)
    assert all(f["status"] == "done" for f in report(ray).values())


def test_job_file_list_file_naming_rule_and_warnings_in_the_report(tmp_path, library):
    """The third clip holds a second video stream, which `diffqe enhance` leaves behind with a warning; the
    fourth is near-transparent (all-intra QP 12), which the source-QP guard spares with a note: the report keeps
    both, for a farm to see which outputs lack something and which came out as they went in."""
    subprocess.run(["ffmpeg", "-v", "error", "-i", library / "b" / "three.mp4", "-map", "0:v", "-map", "0:v", "-c",
                    "copy", library / "angles.mkv"], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", SAMPLES / "reference.mkv", "-c:v", "libx265", "-x265-params",
                    "log-level=error:qp=12:keyint=1", library / "master.mkv"], check=True)
    listing = tmp_path / "clips.txt"
    listing.write_text(f"# four clips\n{library / 'a' / 'one.mp4'}\nin/b/three.mp4\nin/angles.mkv\nin/master.mkv\n")
    job = tmp_path / "job.toml"
    job.write_text('name = "{stem}_enhanced.mkv"\nbackend = "ort-cpu"\nlossless = true\nexecutor = "local"\n')
    result = batch(listing, "-o", tmp_path / "out", "--job", job, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mkv")) == [
        "angles_enhanced.mkv", "master_enhanced.mkv", "one_enhanced.mkv", "three_enhanced.mkv"]
    warnings = {name: f["warnings"] for name, f in report(tmp_path / "out").items()}
    assert warnings["one.mp4"] == warnings["three.mp4"] == warnings["master.mkv"] == []
    assert len(warnings["angles.mkv"]) == 1 and "a second video; only the first is enhanced" in warnings["angles.mkv"][0]
    notes = {name: f["notes"] for name, f in report(tmp_path / "out").items()}
    assert notes["one.mp4"] == notes["three.mp4"] == notes["angles.mkv"] == []
    assert len(notes["master.mkv"]) == 1 and "the source-QP guard spares 8 of 8 frames" in notes["master.mkv"][0]
    bad = batch(tmp_path / "nothing-here", "-o", tmp_path / "out2")
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_an_output_folder_inside_the_input_folder_is_not_searched(tmp_path):
    """`diffqe batch lib -o lib/enhanced`, run twice (as a resume would): the outputs are never taken for inputs,
    nor is a partial file that a killed `diffqe enhance` left in the library."""
    lib = tmp_path / "lib"
    encode(lib / "one.mp4", 30)
    (lib / ".two.partial.mkv").write_bytes(b"what a killed diffqe enhance left")
    for _ in range(2):
        result = batch(lib, "-o", lib / "enhanced", "--executor", "local", "--backend", "ort-cpu", "--quiet")
        assert result.returncode == 0, result.stderr
        assert "1 of 1 files done" in result.stderr
    assert sorted(str(p.relative_to(lib)) for p in lib.rglob("*.mkv")) == [".two.partial.mkv", "enhanced/one.mkv"]


def test_options_are_checked_up_front_and_zeros_passed_on(tmp_path):
    """A bad --ensemble, --strength, --crf or --encoder-options (given or in a job file) is a command-line error
    before any file starts; options set to 0 (no stabilisation, no overlap) reach each file's `diffqe enhance`
    rather than falling back to its defaults."""
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--ensemble", "3")
    assert bad.returncode == 2 and "ensemble must be one of 1, 2, 4" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "out").exists()
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--strength", "-1")
    assert bad.returncode == 2 and "strength must be between 0 and 2" in bad.stderr and not (tmp_path / "out").exists()
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--backend", "cuda")
    assert bad.returncode == 2 and "invalid choice: 'cuda'" in bad.stderr and not (tmp_path / "out").exists()
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--crf", "70", "--executor", "local")
    assert bad.returncode == 2 and "Valid quality based range" in bad.stderr and not (tmp_path / "out").exists()
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--encoder-options", "-x265-params bogus=1",
                "--executor", "local")
    assert bad.returncode == 2 and "Unknown option: bogus" in bad.stderr and not (tmp_path / "out").exists()
    (tmp_path / "job.toml").write_text('encoder_options = "-map 0"\n')
    bad = batch(SAMPLES / "sample.mp4", "-o", tmp_path / "out", "--job", tmp_path / "job.toml")
    assert bad.returncode == 2 and "encoder_options: -map: DiffQE sets it" in bad.stderr and "Traceback" not in bad.stderr
    job = Job("in.mp4", "out.mkv")
    cmd = enhance_command(job, {"temporal": 0, "overlap": 0, "seed": 0, "lossless": True, "tile": None, "crf": None})
    assert "--lossless" in cmd and not any(word.startswith(("--tile", "--crf")) for word in cmd)
    args = parse_enhance(cmd[3:])
    assert (args.temporal, args.overlap, args.seed, args.lossless, args.tile, args.crf) == (0, 0, 0, True, None, None)
    # an option with two words reaches enhance as it spells it; a value that starts with '-' is not taken for a flag
    cmd = enhance_command(job, {"segment_seconds": 30.0, "encoder_options": "-tune grain"})
    assert (parse_enhance(cmd[3:]).segment_seconds, parse_enhance(cmd[3:]).encoder_options) == (30.0, "-tune grain")


def test_each_files_process_gets_this_machines_cores_shared_among_the_files(monkeypatch):
    """Ray sets OMP_NUM_THREADS to a task's CPUs (1 by default), which held PyTorch on the CPU to one core per
    file: on this machine the cores are shared among the files that run at once; on a cluster --cpus-per-file
    decides; the user's own setting wins."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = os.cpu_count()
    assert threads_per_file(1, None) == str(cores) and threads_per_file(2 * cores, None) == "1"
    assert threads_per_file(1, "ray://head:10001") is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_file(1, None) is None


def test_files_at_once_take_turns_on_this_machines_gpus(tmp_path, library):
    """Without Ray, files at once are spread over the machine's GPUs (here two, as CUDA_VISIBLE_DEVICES would
    name them): each file's process is given one, says so, and the report keeps it. Ray's share per file
    (--gpus-per-file, by default) follows the same arithmetic."""
    assert (gpu_share(8, 8), gpu_share(1, 8), gpu_share(3, 2), gpu_share(2, 1), gpu_share(4, 0)) == (1, 1, 0.5, 0.5, 0)
    out = tmp_path / "out"
    jobs = discover([str(library)], out, "{stem}.mkv")
    pool = LocalPool(2, None, ["3", "5"])
    try:
        results = run_batch(jobs, {"backend": "ort-cpu", "lossless": True}, State(tmp_path / STATE_NAME, jobs), pool,
                            Progress("none", len(jobs)))
    finally:
        pool.close()
    assert [r.status for r in results] == ["done"] * 3, [r.error for r in results]
    assert {r.gpu for r in results} == {"3", "5"} and {r.backend for r in results} == {"ort-cpu"}


def test_verification_counts_the_frames_and_their_span(tmp_path):
    """An output counts as done only with the input's frames over the input's span of time: a copy passes, a
    copy that lost frames or plays at half speed does not."""
    src = SAMPLES / "sample.mp4"
    made = {"copy.mkv": ["-c", "copy"], "short.mkv": ["-c", "copy", "-frames:v", "5"],
            "slow.mkv": ["-vf", "setpts=2*PTS", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                         "log-level=error"]}
    for name, options in made.items():
        subprocess.run(["ffmpeg", "-v", "error", "-i", src, *options, tmp_path / name], check=True)
    assert verify(src, tmp_path / "copy.mkv") is None
    assert "has 5 frames, which is not the number of frames" in verify(src, tmp_path / "short.mkv")
    assert "spans 0.560 s of video, the input 0.280 s" in verify(src, tmp_path / "slow.mkv")
