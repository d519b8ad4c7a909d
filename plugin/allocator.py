"""glibc's allocator settings for frame-sized buffers (docs/performance.md).

glibc hands each freed buffer above its mmap threshold back to the kernel and faults it in again on the next
allocation: frame-sized NumPy temporaries then spend most of their time in page faults (the temporal
stabilisation at 1080p: 25-30 ms per frame, 13-15 with these), and so do PyTorch's activations on the CPU.  A
fixed threshold above any frame keeps them in the heap.  One arena: the heaps of the others (one per frame
thread) hold at most 64 MiB, so larger activations allocated from VapourSynth's frame threads were mapped
afresh on every frame (torch-cpu-bf16 at 960x540 through vspipe: 1.83 -> 2.30 frames/s).

``diffqe enhance`` starts vspipe with them as environment variables; ``tune`` sets them at run time in a
process that did not start with them: enhance.vpy before its source filter starts decoder threads (``vspipe
enhance.vpy`` by hand, torch-cpu-bf16, 960x540: 1.54 -> 2.30-2.41 frames/s, 2.41 with the variables), and
``enhance()`` (later, so threads that already took an arena keep it: 1.9-2.0).  The user's own settings win.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

TUNING = {"MALLOC_MMAP_THRESHOLD_": 256 << 20, "MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_ARENA_MAX": 1}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}  # <malloc.h>


def environment() -> dict[str, str]:
    """This process's environment with TUNING added where it does not set those (for a child process)."""
    return {**{name: str(value) for name, value in TUNING.items()}, **os.environ}


@functools.cache  # once per process: enhance.vpy and every enhance() call it
def tune() -> None:
    """TUNING through mallopt, each where the environment does not set it; nothing outside glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    for name, value in TUNING.items():
        if name not in os.environ:
            libc.mallopt(_MALLOPT[name], value)
