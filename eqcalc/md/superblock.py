"""The HDF5 superblock of a trajectory (versions 2 and 3, which ``libver="latest"`` writes).

Layout, all little-endian: signature (8 bytes), version (1), size of offsets *s* (1), size of
lengths (1), file consistency flags (1), base address (*s*), superblock extension address (*s*),
end-of-file address (*s*), root group object header address (*s*), then a Jenkins lookup3
checksum (4) of everything before it.

Two jobs that h5py cannot do itself: recognise a truncated file before HDF5's SWMR reader loops
on it for ever, and clear the "open for writing" flags a killed writer leaves (``h5clear -s``),
so a run can be continued in place.
"""

from __future__ import annotations

import os
from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
FLAGS_OFFSET = 11
MASK = 0xFFFFFFFF


def _rotate(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` of ``data``: the checksum of HDF5's metadata."""
    a = b = c = (0xDEADBEEF + len(data) + initval) & MASK
    if not data:
        return c
    padded = data + bytes(-len(data) % 12)
    words = [int.from_bytes(padded[i:i + 4], "little") for i in range(0, len(padded), 4)]
    for block in range(0, len(words) - 3, 3):  # every 12-byte block but the last is mixed
        a, b, c = (a + words[block]) & MASK, (b + words[block + 1]) & MASK, (c + words[block + 2]) & MASK
        a = (a - c) & MASK; a ^= _rotate(c, 4); c = (c + b) & MASK  # noqa: E702
        b = (b - a) & MASK; b ^= _rotate(a, 6); a = (a + c) & MASK  # noqa: E702
        c = (c - b) & MASK; c ^= _rotate(b, 8); b = (b + a) & MASK  # noqa: E702
        a = (a - c) & MASK; a ^= _rotate(c, 16); c = (c + b) & MASK  # noqa: E702
        b = (b - a) & MASK; b ^= _rotate(a, 19); a = (a + c) & MASK  # noqa: E702
        c = (c - b) & MASK; c ^= _rotate(b, 4); b = (b + a) & MASK  # noqa: E702
    a, b, c = (a + words[-3]) & MASK, (b + words[-2]) & MASK, (c + words[-1]) & MASK
    c ^= b; c = (c - _rotate(b, 14)) & MASK  # noqa: E702
    a ^= c; a = (a - _rotate(c, 11)) & MASK  # noqa: E702
    b ^= a; b = (b - _rotate(a, 25)) & MASK  # noqa: E702
    c ^= b; c = (c - _rotate(b, 16)) & MASK  # noqa: E702
    a ^= c; a = (a - _rotate(c, 4)) & MASK  # noqa: E702
    b ^= a; b = (b - _rotate(a, 14)) & MASK  # noqa: E702
    c ^= b; c = (c - _rotate(b, 24)) & MASK  # noqa: E702
    return c


def _superblock(path: Path) -> tuple[bytes, int] | None:
    """(the superblock bytes before its checksum, size of offsets), or None for a file that is not
    HDF5 with a version 2/3 superblock at its start (h5py then says itself what is wrong)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head.startswith(SIGNATURE) or len(head) < 12 or head[8] not in (2, 3):
        return None
    size_of_offsets = head[9]
    length = FLAGS_OFFSET + 1 + 4 * size_of_offsets
    if len(head) < length + 4:
        return None
    return head[:length], size_of_offsets


def check_not_truncated(path: Path) -> None:
    """ValueError if ``path`` is shorter than the end-of-file address its superblock records.

    HDF5 makes this check itself except in single-writer/multiple-reader mode, where a truncated
    file (a copy cut short, a full disk) sends it into an endless metadata retry loop instead.
    The writer flushes after every frame, which sets the file's size to that address, so a killed
    run's file passes."""
    found = _superblock(path)
    if found is None:
        return
    head, s = found
    base, eof = (int.from_bytes(head[start:start + s], "little") for start in (12, 12 + 2 * s))
    size = path.stat().st_size
    if size < base + eof:
        raise ValueError(
            f"{str(path)!r} is truncated: it holds {size:,} of the {base + eof:,} bytes its HDF5 header "
            "records (a partial copy, or a full disk), so its frames cannot be recovered; use a complete copy."
        )


def clear_write_flags(path: Path) -> bool:
    """Clear the consistency flags that mark ``path`` as open for (SWMR) writing, as ``h5clear -s``
    does, rewriting the superblock's checksum; True if they were set. Call it only on a file no
    process writes any more (a killed or finished run)."""
    found = _superblock(path)
    if found is None:
        return False
    head, _ = found
    with open(path, "r+b") as handle:
        handle.seek(len(head))
        stored = int.from_bytes(handle.read(4), "little")
        if stored != lookup3(head):
            raise ValueError(f"{str(path)!r}: its HDF5 superblock fails its checksum, so the file is damaged.")
        if head[FLAGS_OFFSET] == 0:
            return False
        cleared = head[:FLAGS_OFFSET] + b"\x00" + head[FLAGS_OFFSET + 1:]
        handle.seek(0)
        handle.write(cleared + lookup3(cleared).to_bytes(4, "little"))
        handle.flush()
        os.fsync(handle.fileno())
    return True
