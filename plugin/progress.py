"""What `diffqe enhance` shows of a running job on stderr: vspipe's log read as it comes (BestSource's index pass,
the frames the source-QP guard spares or a source it cannot read, why vspipe stopped) and the progress line, as a
bar or JSON lines."""

from __future__ import annotations

import json
import re
import sys
import threading
import time

from .script import LESS, NO_GUARD


def clock(seconds: float) -> str:
    """SECONDS as minutes:seconds ("12:05")."""
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def vspipe_reason(log: str) -> str | None:
    """Why vspipe stopped, in one line: the exception that ends the script's last traceback ("Type: message"),
    else its last "Error: message" line (vspipe's own errors, which carry no traceback)."""
    lines = log.splitlines()
    tracebacks = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if tracebacks:
        raised = [ln for ln in lines[tracebacks[-1] + 1:] if re.match(r"[A-Za-z_][\w.]*: \S", ln)]
        if raised:
            return raised[-1].split(": ", 1)[1].strip()
    errors = [ln.split("Error: ", 1)[1].strip() for ln in lines if "Error: " in ln]
    return errors[-1] if errors and errors[-1] else None


INDEX_PROGRESS = re.compile(r"VideoSource track #\d+ index progress (\d+)%")
FRAMES = re.compile(r"enhance\.vpy: (\d+) frames$")  # what the script says it has
SPARED = re.compile(r"enhance\.vpy: (the source-QP guard spares .*) " + re.escape(NO_GUARD))
UNREAD = re.compile(r"enhance\.vpy: (the source-QP guard reads .*) " + re.escape(LESS))


class VspipeLog(threading.Thread):
    """vspipe's stderr, read on a thread of its own: its lines kept for the error message, and BestSource's index
    pass (one decode of the whole input before the first frame, not repeated on a resume: minutes for a long
    film) shown as it goes, as a line or a JSON line {"stage": "index", "percent", "eta"}; then the clip's frame
    count as the index has it."""

    def __init__(self, log, name: str, style: str) -> None:
        super().__init__(daemon=True)
        self.log, self.name, self.style = log, name, style
        self.lines: list[str] = []
        self.launched = self.indexed = time.monotonic()  # indexed: the index's last report, where fps count from
        self.frames: int | None = None

    def run(self) -> None:
        for line in self.log:
            self.lines.append(line)
            if match := FRAMES.search(line):
                self.frames = int(match.group(1))
            elif match := SPARED.search(line):
                self._note(f"{match.group(1)} (--no-qp-guard gives them all of it)")
            elif match := UNREAD.search(line):
                self._note(f"{match.group(1)} (--strength 0 leaves such a source as it is)")
            elif match := INDEX_PROGRESS.search(line):
                self.indexed = time.monotonic()
                if self.style != "none":
                    print(self._index_progress(int(match.group(1))), end="", file=sys.stderr, flush=True)

    def _note(self, text: str) -> None:
        after_bar = "\n" if self.style == "bar" and self.indexed > self.launched else ""
        print(f"{after_bar}note: {self.name}: {text}", file=sys.stderr, flush=True)

    def _index_progress(self, percent: int) -> str:
        eta = clock((self.indexed - self.launched) * (100 - percent) / percent) if percent else "?"
        if self.style == "json":
            return json.dumps({"stage": "index", "percent": percent, "eta": eta}) + "\n"
        return f"\rindexing {self.name}: {percent:3d}%  ETA {eta}"


def progress_line(run: int, done: int, total: int | None, started: float, style: str) -> str:
    """A progress bar line, or for farms a JSON line: {"stage": "enhance", "frame", "frames", "fps", "eta"}; RUN of
    the DONE frames were made by this run (the rest by the run it resumes)."""
    fps = run / max(time.monotonic() - started, 1e-6)
    eta = clock((total - done) / fps if total and fps > 0 else 0)
    if style == "json":
        return json.dumps({"stage": "enhance", "frame": done, "frames": total, "fps": round(fps, 2),
                           "eta": eta}) + "\n"
    if not total:
        return f"\r{done} frames  {fps:5.1f} fps"
    frac = min(done / total, 1.0)
    bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
    return f"\r[{bar}] {100 * frac:5.1f}%  {done}/{total} frames  {fps:5.1f} fps  ETA {eta}"
