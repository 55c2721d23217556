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
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2^63


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
    page-faults through all of them again on every call (on large structures a cost comparable
    to the model's own; docs/performance.md). With this on, all allocations come from the heap,
    which is never trimmed (threshold −1, mallopt(3)), so the same pages are reused call after
    call; the price is a resident size that stays at its peak. A finite trim threshold is not
    enough: a large enough step frees more than the threshold at the top of the heap, and
    trimming it makes the next call fault those pages in again. Process-wide and idempotent;
    returns False where the C library is not glibc (then nothing changes).
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))


def available_bytes(device: torch.device) -> int | None:
    """Memory ``device`` can still give this process, in bytes, or None if unknown.

    CUDA: free device memory plus what PyTorch's caching allocator holds unused. CPU: the smaller
    of the system's MemAvailable and the headroom under the process's cgroup memory limit (a
    container's limit is invisible to MemAvailable), plus the free heap glibc keeps for reuse.
    """
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    kib = _proc_kib(PROC_MEMINFO, "MemAvailable")
    if kib is None:
        return None
    headroom = cgroup_headroom()
    system = 1024 * kib if headroom is None else min(1024 * kib, headroom)
    return system + free_heap_bytes()


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2 without limit) → None


def cgroup_headroom() -> int | None:
    """Bytes left under the memory limit of this process's cgroup (v2: memory.max − memory.current;
    v1: memory.limit_in_bytes − memory.usage_in_bytes), or None without a limit. The process's
    own cgroup folder and each ancestor up to the mount's root are read (batch systems set the
    limit on a job or slice above the task's folder; inside a container the path may be
    relative to a namespace, whose root is the mount), and the smallest headroom wins."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    headrooms = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            mount, limit_file, usage_file = CGROUP_ROOT, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            mount, limit_file, usage_file = CGROUP_ROOT / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        relative = Path(path.strip("/"))
        for level in [relative, *relative.parents]:  # a limit may sit on any ancestor
            folder = mount / level
            limit, usage = _read_int(folder / limit_file), _read_int(folder / usage_file)
            if limit is not None and usage is not None and limit < UNLIMITED:
                headrooms.append(max(limit - usage, 0))
    return min(headrooms) if headrooms else None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


def free_heap_bytes() -> int:
    """Free bytes glibc holds in its heap for reuse (mallinfo2 fordblks; 0 elsewhere). Large after
    :func:`keep_freed_memory`: memory this process can use again without asking the system."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return 0
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().fordblks)


class PeakMemory:
    """Result holder of :func:`measure_peak`: ``bytes`` above the starting level, or None if unknown."""

    bytes: int | None = None


@contextmanager
def measure_peak(device: torch.device) -> Iterator[PeakMemory]:
    """Peak memory the body allocates on ``device`` beyond what was in use when it started.

    CPU: resets the process's resident-set high-water mark (VmHWM, which ru_maxrss also
    reports) to the current size, so a process-wide peak read later starts from here; not
    thread-safe. CUDA: resets the device's peak statistics.
    """
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
