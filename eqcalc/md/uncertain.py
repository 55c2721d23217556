"""``uncertain.extxyz``: the states of a committee's MD run whose force spread is above the limit
(``uncertainty_action="save"``), to be labelled (e.g. by DFT) and added to the training data.

Each frame holds the structure (positions, cell, pbc, masses, momenta), ``info`` step, time_fs
(fs) and max_force_std (eV/Å), and the per-atom ``forces_std`` (N,) eV/Å as an array. It holds
no energy or forces: the committee's own predictions are no labels to train on.

Frames are appended whole: each is formatted in memory, then written with one call and flushed,
so a killed run leaves at most a partial last frame. A resumed run rewrites the file without
the frames after its resume step (and without a partial frame) before it appends again: the
steps it recomputes are saved once.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from ase.io import write
from ase.io.extxyz import key_val_str_to_dict

from ..atomic_io import atomic_path
from .trajectory import RESERVED_BYTES, Frame, check_free_space, frame_atoms


class UncertainFrames:
    """Appends states above a committee's force-spread limit to an extended-XYZ file.

    Args:
        path: the file.
        numbers, masses, pbc: the system, (N,), (N,), (3,).
        resume_step: keep an existing file's frames up to this step and append after them;
            None starts a new (empty) file.

    Attributes:
        kept: frames the file held from before (``resume_step``).
        saved: frames appended since.
    """

    def __init__(self, path: str | os.PathLike, numbers: np.ndarray, masses: np.ndarray, pbc: np.ndarray,
                 resume_step: int | None = None):
        self.path = Path(path)
        self._system = (numbers, masses, pbc)
        blocks = complete_frames(self.path) if resume_step is not None and self.path.is_file() else []
        kept = [text for step, text in blocks if step <= resume_step]
        with atomic_path(self.path) as tmp, open(tmp, "w") as handle:
            handle.write("".join(kept))
        self.kept, self.saved = len(kept), 0
        self._handle = open(self.path, "a")

    @property
    def count(self) -> int:
        """Frames the file holds."""
        return self.kept + self.saved

    def append(self, frame: Frame) -> None:
        """Write one state (a frame with ``forces_std``) whole and flush it; DiskFullError (nothing
        written) when the disk is about to be full."""
        atoms = frame_atoms(frame, *self._system)
        atoms.calc = None  # no energy or forces: not labels
        atoms.info["max_force_std"] = float(np.max(frame.forces_std))
        text = io.StringIO()
        write(text, atoms, format="extxyz")
        check_free_space(self.path.parent, len(text.getvalue()) + RESERVED_BYTES)
        self._handle.write(text.getvalue())
        self._handle.flush()
        self.saved += 1

    def close(self) -> None:
        self._handle.close()


def complete_frames(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, text) of each complete frame of a file written by :class:`UncertainFrames`, in file
    order; a partial last frame (a killed write) is left out."""
    lines = Path(path).read_text().splitlines(keepends=True)
    frames, start = [], 0
    while start < len(lines):
        try:
            count = int(lines[start])
        except ValueError:
            break  # not the start of a frame: the rest is a partial write
        end = start + 2 + count
        if end > len(lines) or not lines[end - 1].endswith("\n"):
            break
        comment = key_val_str_to_dict(lines[start + 1])
        if "step" not in comment:
            break
        frames.append((int(comment["step"]), "".join(lines[start:end])))
        start = end
    return frames
