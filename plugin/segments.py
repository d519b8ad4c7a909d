"""Resumable encodes: `diffqe enhance` writes the enhanced video as segments of a fixed number of frames into a
hidden folder beside the output.  ffmpeg's segment muxer cuts them on forced IDR frames (each decodes on its
own) and lists each one once it is complete, so a job that is killed keeps every finished segment.  A rerun of
the same job (same input file, weights and options) starts vspipe at the first frame no complete segment
holds; the filter's frames do not depend on where vspipe starts (its temporal windows read the whole clip), so
the resumed video has the frames an uninterrupted run gives.  The last step joins the segments by stream copy
on the input's frame times (plugin.timing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import ffmpeg

from ..model.files import package_version

PATTERN = "seg%06d.mkv"  # Matroska holds any encoder's stream, colour tags included
MAX_CUTS = 1000  # cut points listed when the frame count is unknown: the rest goes into the last segment
ENCODED = "encoded"  # marker: every segment is written, only the join is left


def work_dir(dst: Path) -> Path:
    """The hidden folder beside DST that holds its segments until DST is complete."""
    return dst.with_name(f".{dst.stem}.partial{dst.suffix}.d")


def job_identity(src: Path, weights: list[Path], options: dict) -> dict:
    """What the segments depend on: the input file as it is now, the bytes of the weights the job reads, the
    code and the options."""
    info = src.stat()
    return {"input": str(src.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "weights": hashlib.sha256(b"".join(p.read_bytes() for p in weights)).hexdigest(),
            "diffqe": package_version(), "options": options}


def _packets(path: Path) -> int:
    """Frames in a segment; 0 for one that is not a readable video (ffmpeg stopped before its first frame)."""
    try:
        streams = ffmpeg.probe(str(path), select_streams="v:0", count_packets=None)["streams"]
    except ffmpeg.Error:
        return 0
    return int(streams[0]["nb_read_packets"]) if streams else 0


class Busy(RuntimeError):
    """Another process is writing the same output."""


_held: dict[Path, int] = {}  # folders this process has locked, and their descriptors (kept open: the lock)


def _lock(folder: Path) -> None:
    """An exclusive lock on FOLDER for as long as this process runs; Busy where another process holds it."""
    folder = folder.resolve()
    if folder in _held:
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"another process holds {folder}") from None
    except OSError as e:  # a file system without locks (some network and FUSE mounts): the job itself can run
        os.close(fd)
        print(f"warning: {folder} cannot be locked on its file system ({e.strerror}): a second job writing the same "
              "output at the same time would not be stopped", file=sys.stderr)
        return
    _held[folder] = fd


@dataclass
class Segments:
    folder: Path
    frames: int  # per segment; the last one may hold fewer
    counts: dict[Path, int] = field(default_factory=dict)  # frames per segment, counted once

    @classmethod
    def open(cls, folder: Path, identity: dict, frames: int) -> tuple[Segments, bool]:
        """The segments of this job, locked against a second process writing the same output (two jobs
        resuming from one folder would delete each other's segments), and whether earlier runs left some to
        resume from.  What another job (other input, weights or options) left is deleted: its frames would not
        match."""
        job = folder / "job.json"
        wanted = identity | {"segment_frames": frames}
        folder.mkdir(parents=True, exist_ok=True)
        _lock(folder)
        try:
            same = json.loads(job.read_text()) == wanted
        except (OSError, ValueError):  # a new folder, or one a stopped run left without its job
            same = False
        if same:
            segments = cls(folder, frames)
            segments.tidy()
            return segments, bool(segments.done())
        for stale in folder.iterdir():  # the folder itself stays: it holds the lock
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        job.write_text(json.dumps(wanted, indent=1))
        return cls(folder, frames), False

    def count(self, segment: Path) -> int:
        if segment not in self.counts:
            self.counts[segment] = _packets(segment)
        return self.counts[segment]

    def done(self, *, encoded: bool | None = None) -> list[Path]:
        """The complete segments in order, from the first on without a gap: those the segment muxer listed and,
        until every one is written (ENCODED; default: whether the job is marked so), that hold all their frames
        (a stopped ffmpeg closes and lists a short one)."""
        listed = {line.split(",", 1)[0] for run in self.folder.glob("run*.csv")
                  for line in run.read_text().splitlines() if line.count(",") == 2}
        complete: list[Path] = []
        encoded = self.encoded if encoded is None else encoded
        while (name := PATTERN % len(complete)) in listed and (path := self.folder / name).is_file():
            if not encoded and self.count(path) != self.frames:
                break
            complete.append(path)
        return complete

    def tidy(self) -> None:
        """Delete segments that are not complete (the one a stopped run was writing)."""
        keep = set(self.done())
        for path in self.folder.glob("seg*.mkv"):
            if path not in keep:
                path.unlink()

    @property
    def encoded(self) -> bool:
        return (self.folder / ENCODED).exists()

    def mark_encoded(self) -> None:
        (self.folder / ENCODED).touch()

    def muxer_options(self, start: int, remaining: int | None, codec: str) -> dict:
        """ffmpeg output options that cut this run's frames (from frame START of the clip) into the next
        segments, each beginning with an IDR frame, listed in a run file as each one completes."""
        first = start // self.frames
        end = remaining if remaining is not None else self.frames * MAX_CUTS
        cuts = range(self.frames, max(end, self.frames + 1), self.frames)
        options = {"f": "segment", "segment_format": "matroska", "segment_frames": ",".join(map(str, cuts)),
                   "segment_list": str(self.folder / f"run{first:06d}.csv"), "segment_list_type": "csv",
                   "segment_start_number": first, "reset_timestamps": 1,
                   "force_key_frames": f"expr:gte(n,n_forced*{self.frames})"}
        if codec in ("libx264", "libx265") or codec.endswith(("_nvenc", "_qsv", "_vaapi")):
            options["forced-idr"] = 1  # a closed GOP at each cut: no frame of a segment refers to the one before
        if codec == "ffv1":
            options["g"] = self.frames  # FFV1 keyframes (context resets) come every g frames, not when forced
        return options
