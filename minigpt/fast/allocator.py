"""Memory reuse for training processes on Linux (glibc's malloc).

A training step allocates its activations and frees them in the backward pass; the next step allocates
the same sizes again. glibc's malloc returns large freed blocks to the system (blocks above its mmap
threshold, 128 KB at first and raised up to 32 MB as such blocks are freed, and a free heap top above
twice that), and memory fresh from the system costs a page fault per 4 KB when first touched, every
step. `keep_freed_memory()` asks malloc to keep such memory for reuse instead (bench/RESULTS.md has the
gain). The training commands (`experiments.run`, `minigpt.pretraining`) call it; the library itself never
changes process-wide settings, and bench/ leaves it off (it would speed up the reference implementation
too: bench/RESULTS.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Keep freed blocks of up to `limit` bytes (and a free heap top of up to `limit`) for reuse instead
    of returning them to the system. The process then holds on to its peak memory until it exits.
    Returns whether it applied (False where malloc is not glibc's)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library found, or one without mallopt (musl)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
