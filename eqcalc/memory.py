"""Memory of the process and the device: how much is free, how much a model evaluation takes
at its peak, and how glibc's allocator treats the large per-edge buffers.

The calculator uses the first two to decide when a structure must be evaluated in chunks. On
CPU the numbers come from Linux's /proc (MemAvailable; the resident-set high-water mark, reset
through /proc/self/clear_refs); elsewhere they are unknown (None) and no automatic chunking happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

PROC_MEMINFO = Path("/proc/meminfo")
PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_kib(path: Path, key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", path.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


@functools.cache
def _libc():
    """glibc, or None on other C libraries."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def release_free_heap() -> None:
    """Give the allocator's free pages back to the system (glibc malloc_trim), so that the
    resident size afterwards counts only memory in use."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    By default glibc serves every allocation above its mmap threshold (≤ 32 MiB) with a fresh
    mmap and unmaps it on free, so a model evaluation whose per-edge tensors are that large
    page-faults through all of them again on every call: past ~1,500 atoms that doubles the
    time per step on CPU. With this on, all allocations come from the heap, which is not
    trimmed, so the same pages are reused call after call; the price is a resident size that
    stays at its peak (about +50% in the scaling benchmark). Process-wide; returns False
    where the C library is not glibc (then nothing changes).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (CUDA: free device memory; CPU: MemAvailable), or None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        kib = _proc_kib(PROC_MEMINFO, "MemAvailable")
        return None if kib is None else 1024 * kib
    return None


class PeakMemory:
    """Result holder of :func:`measure_peak`: ``bytes`` above the starting level, or None if unknown."""

    bytes: int | None = None


@contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMemory]:
    """Peak memory the body allocates on ``device`` beyond what was in use when it started."""
    peak = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.bytes = torch.cuda.max_memory_allocated(device) - start
        return
    release_free_heap()
    start = _proc_kib(PROC_STATUS, "VmRSS")
    try:
        PROC_CLEAR_REFS.write_text("5")  # resets VmHWM to the current resident size
    except OSError:
        start = None
    yield peak
    high = _proc_kib(PROC_STATUS, "VmHWM")
    if start is not None and high is not None:
        peak.bytes = 1024 * max(high - start, 0)
