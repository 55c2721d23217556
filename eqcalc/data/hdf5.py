"""Labelled structures in one self-describing, chunked, appendable HDF5 file.

Layout (S structures, A atoms in all; every dataset carries ``units`` and ``description`` attributes):

    /                 attrs: format="eqcalc-structures", format_version, eqcalc_version,
                             num_structures, num_atoms (the committed lengths), units (JSON)
    /num_atoms        (S,)       int64   atoms per structure (structure k owns a contiguous atom range)
    /cell             (S, 3, 3)  float64 Å, lattice vectors as rows
    /pbc              (S, 3)     bool
    /energy           (S,)       float64 eV          (NaN where has_energy is False)
    /has_energy       (S,)       bool
    /stress           (S, 3, 3)  float64 eV/Å³, ASE sign (NaN where has_stress is False)
    /has_stress       (S,)       bool
    /has_forces       (S,)       bool
    /config_type      (S,)       UTF-8 string
    /numbers          (A,)       int16   atomic numbers
    /positions        (A, 3)     float64 Å
    /forces           (A, 3)     float64 eV/Å        (NaN where the structure has no forces)

Appending resizes the datasets, writes the new rows, and only then raises the committed
lengths in the root attributes, so an append that fails between those steps (an exception,
or a kill while rows are written) leaves the earlier structures readable and the new ones
uncommitted. HDF5 itself cannot promise that a kill during its own metadata flush leaves a
readable file: keep a copy of a dataset you cannot rebuild before appending to it. Loading
reads each dataset in one call and splits it, which is fast for many small structures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic_io import atomic_path
from .labelled import LabelledStructure

FORMAT = "eqcalc-structures"
FORMAT_VERSION = 1
STRUCTURE_CHUNK = 1024
ATOM_CHUNK = 16384

# name: (per "structure" or "atom", trailing shape, numpy dtype, units, description)
DATASETS = {
    "num_atoms": ("structure", (), np.int64, "", "number of atoms of each structure"),
    "cell": ("structure", (3, 3), np.float64, "Å", "lattice vectors as rows (zeros for a molecule)"),
    "pbc": ("structure", (3,), np.bool_, "", "periodic boundary conditions per lattice vector"),
    "energy": ("structure", (), np.float64, "eV", "total energy (NaN where has_energy is false)"),
    "has_energy": ("structure", (), np.bool_, "", "whether the structure has an energy label"),
    "stress": ("structure", (3, 3), np.float64, "eV/Å^3", "stress, ASE sign: positive = tensile (NaN if absent)"),
    "has_stress": ("structure", (), np.bool_, "", "whether the structure has a stress label"),
    "has_forces": ("structure", (), np.bool_, "", "whether the structure has force labels"),
    "config_type": ("structure", (), h5py.string_dtype(), "", "configuration type used to group errors"),
    "numbers": ("atom", (), np.int16, "", "atomic numbers"),
    "positions": ("atom", (3,), np.float64, "Å", "Cartesian positions"),
    "forces": ("atom", (3,), np.float64, "eV/Å", "forces (NaN where the structure has no forces)"),
}
UNITS = {"length": "Å", "energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3 (ASE sign, positive = tensile)"}


def _columns(structures: list[LabelledStructure]) -> dict[str, np.ndarray]:
    """The rows to write for ``structures``, one array per dataset."""
    nan3 = np.full((3, 3), np.nan)
    return {
        "num_atoms": np.array([s.num_atoms for s in structures], dtype=np.int64),
        "cell": np.array([s.cell for s in structures], dtype=np.float64).reshape(-1, 3, 3),
        "pbc": np.array([s.pbc for s in structures], dtype=bool).reshape(-1, 3),
        "energy": np.array([np.nan if s.energy is None else s.energy for s in structures], dtype=np.float64),
        "has_energy": np.array([s.energy is not None for s in structures], dtype=bool),
        "stress": np.array([nan3 if s.stress is None else s.stress for s in structures]).reshape(-1, 3, 3),
        "has_stress": np.array([s.stress is not None for s in structures], dtype=bool),
        "has_forces": np.array([s.forces is not None for s in structures], dtype=bool),
        "config_type": np.array([s.config_type for s in structures], dtype=object),
        "numbers": np.concatenate([s.numbers for s in structures]).astype(np.int16),
        "positions": np.concatenate([s.positions for s in structures]).reshape(-1, 3),
        "forces": np.concatenate(
            [np.full((s.num_atoms, 3), np.nan) if s.forces is None else s.forces for s in structures]
        ).reshape(-1, 3),
    }


def _create_layout(handle: h5py.File) -> None:
    from .. import __version__

    handle.attrs.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        eqcalc_version=__version__,
        num_structures=0,
        num_atoms=0,
        units=json.dumps(UNITS, ensure_ascii=False),
    )
    for name, (axis, shape, dtype, units, description) in DATASETS.items():
        chunk = STRUCTURE_CHUNK if axis == "structure" else ATOM_CHUNK
        dataset = handle.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(chunk, *shape))
        dataset.attrs.update(units=units, description=description, per=axis)


def _append_rows(handle: h5py.File, structures: list[LabelledStructure]) -> None:
    columns = _columns(structures)
    committed = {"structure": int(handle.attrs["num_structures"]), "atom": int(handle.attrs["num_atoms"])}
    for name, (axis, *_rest) in DATASETS.items():
        start = committed[axis]
        values = columns[name]
        handle[name].resize(start + len(values), axis=0)
        handle[name][start:] = values
    handle.attrs["num_atoms"] = committed["atom"] + len(columns["numbers"])
    handle.attrs["num_structures"] = committed["structure"] + len(structures)


def _check_format(handle: h5py.File, path: Path) -> None:
    if handle.attrs.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is an HDF5 file but not eqcalc structures (no format={FORMAT!r} attribute). "
            "Convert the data with `eqcalc convert INPUT OUTPUT.h5`."
        )
    if int(handle.attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} uses structures format version {handle.attrs['format_version']}; upgrade eqcalc.")
    missing = [name for name in DATASETS if name not in handle]
    if missing:
        raise ValueError(f"{str(path)!r} is damaged: datasets {missing} are missing. Re-create it with `eqcalc convert`.")


def _open(path: Path, mode: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as err:
        raise ValueError(f"{str(path)!r} is not a readable HDF5 file (truncated or another format?): {err}") from err


def write_hdf5(path: str | os.PathLike, structures: list[LabelledStructure], *, append: bool = False) -> None:
    """Write ``structures`` to ``path``; with ``append`` add them to an existing eqcalc file.

    A new file is written to a temporary name and renamed into place, so a crash never
    leaves a half-written file under ``path``.
    """
    path = Path(path)
    if not structures:
        raise ValueError("No structures to write.")
    if append and path.exists():
        with _open(path, "r+") as handle:
            _check_format(handle, path)
            _append_rows(handle, structures)
        return
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        _create_layout(handle)
        _append_rows(handle, structures)


def read_hdf5(path: str | os.PathLike) -> list[LabelledStructure]:
    """All committed structures of an eqcalc HDF5 file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} does not exist.")
    with _open(path, "r") as handle:
        _check_format(handle, path)
        num_structures = int(handle.attrs["num_structures"])
        num_atoms_total = int(handle.attrs["num_atoms"])
        data = {}
        for name, (axis, *_rest) in DATASETS.items():
            rows = num_structures if axis == "structure" else num_atoms_total
            dataset = handle[name].asstr() if name == "config_type" else handle[name]
            data[name] = dataset[:rows]
            if len(data[name]) != rows:
                raise ValueError(f"{str(path)!r} is damaged: dataset {name!r} is shorter than the committed length.")
    offsets = np.concatenate([[0], np.cumsum(data["num_atoms"])])
    if offsets[-1] != num_atoms_total:
        raise ValueError(f"{str(path)!r} is damaged: num_atoms does not add up to the number of atom rows.")
    structures = []
    for k in range(num_structures):
        atoms = slice(offsets[k], offsets[k + 1])
        structures.append(
            LabelledStructure(
                numbers=data["numbers"][atoms],
                positions=data["positions"][atoms],
                cell=data["cell"][k],
                pbc=data["pbc"][k],
                energy=float(data["energy"][k]) if data["has_energy"][k] else None,
                forces=data["forces"][atoms] if data["has_forces"][k] else None,
                stress=data["stress"][k] if data["has_stress"][k] else None,
                config_type=str(data["config_type"][k]),
            )
        )
    return structures
