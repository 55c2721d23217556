"""MD trajectories in HDF5: one resizable, chunked dataset per quantity, one row per frame.

Layout (units: Å, fs, eV)::

    attrs: format="eqcalc-md-trajectory", format_version=1, metadata=<JSON of the run settings>
    numbers (N,) int64, masses (N,) float64 amu, pbc (3,) bool
    step (F,) int64, time (F,) fs, positions (F, N, 3) Å, velocities (F, N, 3) Å/fs,
    forces (F, N, 3) eV/Å, potential_energy (F,) eV, cell (F, 3, 3) Å
    integrator/<name> (F, ...)   thermostat / random-generator state needed to resume

The writer uses HDF5's single-writer/multiple-reader mode and flushes after every
frame, so the file is consistent at all times: a run that is killed leaves a file
holding every completed frame, and a running one can be read. Such a file opens with
``h5py.File(path, "r", swmr=True)`` (or :func:`read_trajectory`); a plain ``h5py.File(path)``
refuses it (asking for ``h5clear -s``) until the run is resumed or :func:`repair_trajectory`
rewrites it.
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

FORMAT = "eqcalc-md-trajectory"
FORMAT_VERSION = 1
FRAME_FIELDS = ("positions", "velocities", "forces", "potential_energy", "cell", "time")
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


@dataclass
class Trajectory:
    """A whole trajectory in memory: per-frame arrays with a leading frame axis F."""

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
        )

    def atoms(self, index: int) -> Atoms:
        """Frame ``index`` as ASE Atoms (see :func:`frame_atoms`)."""
        return frame_atoms(self.frame(index), self.numbers, self.masses, self.pbc)


def frame_atoms(frame: Frame, numbers: np.ndarray, masses: np.ndarray, pbc: np.ndarray) -> Atoms:
    """A frame as ASE Atoms with momenta, step and time in ``info``, and its energy and forces
    attached as a single-point result."""
    atoms = Atoms(numbers=numbers, positions=frame.positions, cell=frame.cell, pbc=pbc, masses=masses)
    atoms.set_velocities(frame.velocities / units.fs)
    atoms.info.update(step=frame.step, time_fs=frame.time)
    atoms.calc = SinglePointCalculator(atoms, energy=frame.potential_energy, forces=np.array(frame.forces))
    return atoms


def _chunk_rows(row_shape: tuple[int, ...], itemsize: int = 8) -> int:
    row_bytes = itemsize * int(np.prod(row_shape, dtype=np.int64))
    return int(np.clip(CHUNK_BYTES // max(row_bytes, 1), 1, 4096))


class TrajectoryWriter:
    """Appends frames to ``path``, flushing after each.

    Args:
        path: the HDF5 file; replaced atomically when the writer opens.
        numbers, masses, pbc: the system, (N,), (N,), (3,).
        metadata: plain values stored as JSON (run settings).
        integrator_template: one frame's integrator state (names and shapes of the ``integrator/`` datasets).
        previous: frames to copy in first (resuming a run).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        numbers: np.ndarray,
        masses: np.ndarray,
        pbc: np.ndarray,
        metadata: dict[str, Any],
        integrator_template: dict[str, np.ndarray],
        previous: Trajectory | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        n = len(numbers)
        shapes = {
            "time": ((), np.float64), "positions": ((n, 3), np.float64), "velocities": ((n, 3), np.float64),
            "forces": ((n, 3), np.float64), "potential_energy": ((), np.float64), "cell": ((3, 3), np.float64),
            **{f"integrator/{k}": (np.shape(v), np.asarray(v).dtype) for k, v in integrator_template.items()},
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
                if previous is not None:
                    for name, values in _per_frame_arrays(previous).items():
                        handle[name].resize(len(previous), axis=0)
                        handle[name][...] = values
        self._handle = h5py.File(self.path, "r+", libver="latest")
        self._handle.swmr_mode = True

    def append(self, frame: Frame) -> None:
        """Write one frame and flush it to disk; :class:`DiskFullError` (nothing written) when the
        disk may not hold it (see :meth:`space_needed`)."""
        check_free_space(self.path.parent, self.space_needed())
        index = self._handle["step"].shape[0]
        for name, value in _per_frame_arrays(frame).items():
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


def _per_frame_arrays(frames: Frame | Trajectory) -> dict[str, Any]:
    """Dataset name -> value(s) of one frame or of a whole trajectory, with "step" last:
    a frame counts as written once its step is there."""
    return {
        "time": frames.time, "positions": frames.positions, "velocities": frames.velocities,
        "forces": frames.forces, "potential_energy": frames.potential_energy, "cell": frames.cell,
        **{f"integrator/{k}": v for k, v in frames.integrator.items()},
        "step": frames.step,
    }


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_not_truncated(path: Path) -> None:
    """Raise ValueError if ``path`` is shorter than the end-of-file address its HDF5 superblock
    records (versions 2 and 3, which libver="latest" writes: signature, version, sizes of offsets
    and lengths, flags, then the base, extension and end-of-file addresses).

    HDF5 makes this check itself except in single-writer/multiple-reader mode, where a truncated
    file (a copy cut short, a full disk) sends it into an endless metadata retry loop instead.
    The writer flushes after every frame, which sets the file's size to that address, so a killed
    run's file passes."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head.startswith(HDF5_SIGNATURE) or len(head) < 12 or head[8] not in (2, 3):
        return  # not HDF5, or an older superblock: h5py itself says what is wrong
    size_of_offsets = head[9]
    base, eof = (
        int.from_bytes(head[start:start + size_of_offsets], "little")
        for start in (12, 12 + 2 * size_of_offsets)
    )
    size = path.stat().st_size
    if size < base + eof:
        raise ValueError(
            f"{str(path)!r} is truncated: it holds {size:,} of the {base + eof:,} bytes its HDF5 header "
            "records (a partial copy, or a full disk), so its frames cannot be recovered; use a complete copy."
        )


def read_trajectory(path: str | os.PathLike) -> Trajectory:
    """Read every complete frame of an eqcalc HDF5 trajectory (also of a running or killed run);
    a truncated file raises ValueError (see :func:`check_not_truncated`)."""
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
        per_frame = [*FRAME_FIELDS, "step"] + [f"integrator/{k}" for k in handle.get("integrator", {})]
        count = min(handle[name].shape[0] for name in per_frame)
        data = {name: handle[name][:count] for name in per_frame}
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
    file name unless given: .extxyz, .xyz, .traj, …). Returns the number of frames written."""
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
    """Rewrite the trajectory of a killed run, keeping its complete frames and dropping any partial
    one, so that every HDF5 tool opens it. Returns the number of frames kept."""
    trajectory = read_trajectory(path)
    if len(trajectory) == 0:
        raise ValueError(f"{str(path)!r} holds no complete frame.")
    template = {name: values[0] for name, values in trajectory.integrator.items()}
    TrajectoryWriter(
        path, trajectory.numbers, trajectory.masses, trajectory.pbc, trajectory.metadata, template, trajectory
    ).close()
    return len(trajectory)
