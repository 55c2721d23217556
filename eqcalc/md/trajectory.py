"""MD trajectories in HDF5: one resizable, chunked dataset per quantity, one row per frame.

Layout (units: Å, fs, eV)::

    attrs: format="eqcalc-md-trajectory", format_version=1, metadata=<JSON of the run settings>
    numbers (N,) int64, masses (N,) float64 amu, pbc (3,) bool
    step (F,) int64, time (F,) fs, positions (F, N, 3) Å, velocities (F, N, 3) Å/fs,
    forces (F, N, 3) eV/Å, potential_energy (F,) eV, cell (F, 3, 3) Å
    integrator/<name> (F, ...)   thermostat / random-generator state needed to resume
    forces_std (F, N) eV/Å       only in runs of a committee: each atom's force spread

``forces_std`` is optional: files without it (every single-model run, and every file written
before committees) read, resume and repair as before, with ``Trajectory.forces_std`` None.

The writer uses HDF5's single-writer/multiple-reader mode and flushes after every
frame, so the file is consistent at all times: a run that is killed leaves a file
holding every completed frame, and a running one can be read. Such a file opens with
``h5py.File(path, "r", swmr=True)`` (or :func:`read_trajectory`); a plain ``h5py.File(path)``
refuses it (asking for ``h5clear -s``) until the run is resumed or :func:`repair_trajectory`
clears its flags. Both work in place: a partial last frame is cut off, and nothing is copied.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ..atomic_io import atomic_path
from .superblock import check_not_truncated, clear_write_flags

FORMAT = "eqcalc-md-trajectory"
FORMAT_VERSION = 1
FRAME_FIELDS = ("positions", "velocities", "forces", "potential_energy", "cell", "time")
OPTIONAL_FRAME_FIELDS = ("forces_std",)  # per-frame datasets only some files have
CHUNK_BYTES = 1 << 16


@dataclass
class Frame:
    """One saved MD state."""

    step: int
    time: float  # fs
    positions: np.ndarray  # (N, 3) Å
    velocities: np.ndarray  # (N, 3) Å/fs
    forces: np.ndarray  # (N, 3) eV/Å
    potential_energy: float  # eV
    cell: np.ndarray  # (3, 3) Å
    integrator: dict[str, np.ndarray] = field(default_factory=dict)
    forces_std: np.ndarray | None = None  # (N,) eV/Å, a committee's per-atom force spread; None for one model


@dataclass
class Trajectory:
    """A whole trajectory in memory: per-frame arrays with a leading frame axis F
    (``forces_std`` (F, N) eV/Å for a committee's run, else None)."""

    numbers: np.ndarray
    masses: np.ndarray
    pbc: np.ndarray
    metadata: dict[str, Any]
    step: np.ndarray
    time: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    potential_energy: np.ndarray
    cell: np.ndarray
    integrator: dict[str, np.ndarray]
    forces_std: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def frame(self, index: int) -> Frame:
        return Frame(
            step=int(self.step[index]),
            time=float(self.time[index]),
            positions=self.positions[index],
            velocities=self.velocities[index],
            forces=self.forces[index],
            potential_energy=float(self.potential_energy[index]),
            cell=self.cell[index],
            integrator={name: values[index] for name, values in self.integrator.items()},
            forces_std=None if self.forces_std is None else self.forces_std[index],
        )

    def atoms(self, index: int) -> Atoms:
        """Frame ``index`` as ASE Atoms (see :func:`frame_atoms`)."""
        return frame_atoms(self.frame(index), self.numbers, self.masses, self.pbc)


def frame_atoms(frame: Frame, numbers: np.ndarray, masses: np.ndarray, pbc: np.ndarray) -> Atoms:
    """A frame as ASE Atoms with momenta, step and time in ``info``, a committee's per-atom
    ``forces_std`` (N,) eV/Å in ``arrays`` (when the frame has it), and its energy and forces
    attached as a single-point result."""
    atoms = Atoms(numbers=numbers, positions=frame.positions, cell=frame.cell, pbc=pbc, masses=masses)
    atoms.set_velocities(frame.velocities / units.fs)
    atoms.info.update(step=frame.step, time_fs=frame.time)
    if frame.forces_std is not None:
        atoms.arrays["forces_std"] = np.array(frame.forces_std, dtype=np.float64)
    atoms.calc = SinglePointCalculator(atoms, energy=frame.potential_energy, forces=np.array(frame.forces))
    return atoms


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int = 8) -> int:
    row_bytes = itemsize * int(np.prod(row_shape, dtype=np.int64))
    return int(np.clip(CHUNK_BYTES // max(row_bytes, 1), 1, 4096))


class TrajectoryWriter:
    """Appends frames to ``path``, flushing after each.

    ``TrajectoryWriter(path, ...)`` starts a new file; :meth:`continue_file` appends to the file of
    an earlier run in place.

    Args:
        path: the HDF5 file; replaced atomically when the writer opens.
        numbers, masses, pbc: the system, (N,), (N,), (3,).
        metadata: plain values stored as JSON (run settings).
        integrator_template: one frame's integrator state (names and shapes of the ``integrator/`` datasets).
        forces_std: store each frame's ``forces_std`` (a committee's run); every frame must then have it,
            and without it none may.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        numbers: np.ndarray,
        masses: np.ndarray,
        pbc: np.ndarray,
        metadata: dict[str, Any],
        integrator_template: dict[str, np.ndarray],
        forces_std: bool = False,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = len(numbers)
        shapes = {
            "time": ((), np.float64), "positions": ((n, 3), np.float64), "velocities": ((n, 3), np.float64),
            "forces": ((n, 3), np.float64), "potential_energy": ((), np.float64), "cell": ((3, 3), np.float64),
            **{f"integrator/{k}": (np.shape(v), np.asarray(v).dtype) for k, v in integrator_template.items()},
            **({"forces_std": ((n,), np.float64)} if forces_std else {}),
            "step": ((), np.int64),
        }
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w", libver="latest") as handle:
                handle.attrs["format"] = FORMAT
                handle.attrs["format_version"] = FORMAT_VERSION
                handle.attrs["metadata"] = json.dumps(metadata)
                handle["numbers"] = np.asarray(numbers, dtype=np.int64)
                handle["masses"] = np.asarray(masses, dtype=np.float64)
                handle["pbc"] = np.asarray(pbc, dtype=bool)
                for name, (shape, dtype) in shapes.items():
                    handle.create_dataset(
                        name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                        chunks=(_chunk_rows(shape), *shape),
                    )
        self._open()

    @classmethod
    def continue_file(cls, path: str | os.PathLike, metadata: dict[str, Any]) -> "TrajectoryWriter":
        """A writer appending to the trajectory of an earlier (finished or killed) run, in place:
        its complete frames stay where they are, a partial last frame is cut off, its metadata is
        replaced by ``metadata``. Needs no free space beyond the new frames'."""
        writer = cls.__new__(cls)
        writer.path = Path(path)
        truncate_to_complete_frames(writer.path, metadata)
        writer._open()
        return writer

    def _open(self) -> None:
        self._handle = h5py.File(self.path, "r+", libver="latest")
        self._handle.swmr_mode = True
        self._names = set(_per_frame_names(self._handle))

    @property
    def has_forces_std(self) -> bool:
        """Whether the file stores per-atom ``forces_std`` (a committee's run)."""
        return "forces_std" in self._names

    def append(self, frame: Frame) -> None:
        """Write one frame and flush it to disk; :class:`DiskFullError` (nothing written) when the
        disk may not hold it (see :meth:`space_needed`); ValueError when the frame's quantities are not
        the file's (a frame with no ``forces_std`` for a committee's file would not count as written)."""
        arrays = _per_frame_arrays(frame)
        if set(arrays) != self._names:
            raise ValueError(
                f"A frame with {sorted(arrays)} does not fit {str(self.path)!r}, which stores {sorted(self._names)}."
            )
        check_free_space(self.path.parent, self.space_needed())
        index = self._handle["step"].shape[0]
        for name, value in arrays.items():
            dataset = self._handle[name]
            dataset.resize(index + 1, axis=0)
            dataset[index] = value
        self._handle.flush()

    def space_needed(self) -> int:
        """Bytes the next frame may take on disk: a new chunk of every dataset (HDF5 allocates a
        whole chunk when a frame starts one) plus room for the metadata, log rows and plots."""
        chunks = sum(d.chunks[0] * d.dtype.itemsize * int(np.prod(d.shape[1:], dtype=np.int64))
                     for d in self._datasets())
        return 2 * chunks + RESERVED_BYTES

    def _datasets(self) -> list[h5py.Dataset]:
        found = []
        self._handle.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset) and item.chunks else None)
        return found

    def close(self) -> None:
        self._handle.close()


RESERVED_BYTES = 1 << 18  # beyond the chunks of a frame: superblock and index updates, a log row, final plots


class DiskFullError(OSError):
    """The disk is about to be full: stop writing before HDF5 fails in the middle of a frame."""


def check_free_space(folder: Path, needed: int) -> None:
    """DiskFullError naming the folder and the fix if its file system has fewer than ``needed``
    bytes free for this user. HDF5 that runs out of space in the middle of a write leaves its
    in-memory state broken (errors on every later call, and a crash at exit), so the writer checks
    before each frame."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < needed:
        raise DiskFullError(
            errno.ENOSPC,
            f"the disk holding {str(folder)!r} is full ({free / 2**20:.2f} MiB free, the next frame may need "
            f"{needed / 2**20:.2f} MiB); every frame before is saved: free some space, then continue with "
            "`eqcalc md --resume`",
        )


def _per_frame_arrays(frame: Frame) -> dict[str, Any]:
    """Dataset name -> value of one frame, with "step" last: a frame counts as written once its
    step is there."""
    return {
        "time": frame.time, "positions": frame.positions, "velocities": frame.velocities,
        "forces": frame.forces, "potential_energy": frame.potential_energy, "cell": frame.cell,
        **{f"integrator/{k}": v for k, v in frame.integrator.items()},
        **({"forces_std": frame.forces_std} if frame.forces_std is not None else {}),
        "step": frame.step,
    }


def read_trajectory(path: str | os.PathLike, last_only: bool = False) -> Trajectory:
    """Read every complete frame of an eqcalc HDF5 trajectory (also of a running or killed run),
    or with ``last_only`` just the last one (none if there is none); a truncated file raises
    ValueError (see :func:`check_not_truncated`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Trajectory {str(path)!r} does not exist.")
    check_not_truncated(path)
    try:
        handle = h5py.File(path, "r", swmr=True)
    except OSError as err:
        raise ValueError(f"{str(path)!r} is not a readable HDF5 file: {err}") from err
    with handle:
        if handle.attrs.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is an HDF5 file but not an eqcalc MD trajectory (no format={FORMAT!r}).")
        per_frame = _per_frame_names(handle)
        count = min(handle[name].shape[0] for name in per_frame)
        first = max(count - 1, 0) if last_only else 0
        data = {name: handle[name][first:count] for name in per_frame}
        return Trajectory(
            numbers=handle["numbers"][()],
            masses=handle["masses"][()],
            pbc=handle["pbc"][()],
            metadata=json.loads(handle.attrs["metadata"]),
            integrator={name.split("/", 1)[1]: data.pop(name) for name in list(data) if name.startswith("integrator/")},
            **data,
        )


def export_trajectory(
    path: str | os.PathLike, output: str | os.PathLike, every: int = 1, format: str | None = None
) -> int:
    """Write every ``every``-th frame of an HDF5 trajectory with ``ase.io.write`` (format from the
    file name unless given: .extxyz, .xyz, .traj, …), a committee's ``forces_std`` as a per-atom
    array (see :func:`frame_atoms`). Returns the number of frames written."""
    from ase.io import write

    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}.")
    trajectory = read_trajectory(path)
    if len(trajectory) == 0:
        raise ValueError(f"{str(path)!r} holds no complete frame yet.")
    images = [trajectory.atoms(i) for i in range(0, len(trajectory), every)]
    write(output, images, format=format)
    return len(images)


def repair_trajectory(path: str | os.PathLike) -> int:
    """Make the trajectory of a killed run a plain HDF5 file again, in place: clear the flags
    that mark it as open for writing and cut off a partial last frame. Returns the number of
    complete frames."""
    if len(read_trajectory(path, last_only=True).step) == 0:  # also checks that it is a trajectory
        raise ValueError(f"{str(path)!r} holds no complete frame.")
    return truncate_to_complete_frames(Path(path))


def truncate_to_complete_frames(path: Path, metadata: dict[str, Any] | None = None) -> int:
    """Clear the write flags of ``path`` (a file no process writes any more), shrink every per-frame
    dataset to the complete frames and, if given, replace the metadata. Returns the frame count."""
    check_not_truncated(path)
    clear_write_flags(path)
    with h5py.File(path, "r+", libver="latest") as handle:
        names = _per_frame_names(handle)
        count = min(handle[name].shape[0] for name in names)
        for name in names:
            handle[name].resize(count, axis=0)
        if metadata is not None:
            handle.attrs["metadata"] = json.dumps(metadata)
    return count


def _per_frame_names(handle: h5py.File) -> list[str]:
    optional = [name for name in OPTIONAL_FRAME_FIELDS if name in handle]
    return [*FRAME_FIELDS, *optional, "step"] + [f"integrator/{k}" for k in handle.get("integrator", {})]
