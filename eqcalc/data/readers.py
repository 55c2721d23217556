"""Read labelled structures from extxyz (or anything ``ase.io.read`` reads), ASE databases and eqcalc HDF5.

Labels are looked up per frame. With a key given (``energy_key="REF_energy"``) it is
searched in ``atoms.info``, ``atoms.arrays`` and the attached calculator's results.
Without one, the calculator's results come first (what ``atoms.get_potential_energy()``
returns), then the common names in :data:`FALLBACK_KEYS`. A frame without a label
simply lacks it (the loss masks it); a key that no frame has is an error.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import ase.io
import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from .labelled import DEFAULT_CONFIG_TYPE, LabelledStructure

HDF5_SUFFIXES = (".h5", ".hdf5")
ASE_DB_SUFFIXES = (".db",)
FALLBACK_KEYS = {
    "energy": ("REF_energy", "energy", "DFT_energy"),
    "forces": ("REF_forces", "forces", "DFT_forces"),
    "stress": ("REF_stress", "stress", "DFT_stress"),
    "dipole": ("REF_dipole", "dipole", "DFT_dipole"),
    "polarizability": ("REF_polarizability", "polarizability", "DFT_polarizability"),
}


@dataclass(frozen=True)
class LabelKeys:
    """Names under which the labels are stored; None = calculator results, then common names."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    dipole: str | None = None
    polarizability: str | None = None


def _lookup(atoms: Atoms, key: str) -> Any:
    """The value stored under ``key`` in info, arrays or calculator results, or None."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def _find(atoms: Atoms, quantity: str, key: str | None) -> Any:
    if key is not None:
        return _lookup(atoms, key)
    calc = atoms.calc
    if calc is not None and getattr(calc, "results", {}).get(quantity) is not None:
        return calc.results[quantity]
    for name in FALLBACK_KEYS[quantity]:
        value = _lookup(atoms, name)
        if value is not None:
            return value
    return None


def _as_stress(value: Any, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.size == 6:
        return voigt_6_to_full_3x3_stress(array.reshape(6))
    if array.size == 9:
        return array.reshape(3, 3)
    raise ValueError(f"{where}: stress has {array.size} values; expected 6 (Voigt xx yy zz yz xz xy) or 9 (3×3).")


def _as_vector(value: Any, where: str, quantity: str, unit: str) -> np.ndarray | None:
    """A 3-vector label, None where not finite; ValueError for another size."""
    array = np.asarray(value, dtype=np.float64)
    if array.size != 3:
        raise ValueError(f"{where}: {quantity} has {array.size} values; expected 3 (x y z, {unit}).")
    return array.reshape(3) if np.isfinite(array).all() else None


def _as_symmetric(value: Any, where: str, quantity: str) -> np.ndarray | None:
    """A symmetric 3 × 3 label from 6 (Voigt) or 9 values, None where not finite."""
    array = np.asarray(value, dtype=np.float64)
    if array.size not in (6, 9):
        raise ValueError(f"{where}: {quantity} has {array.size} values; expected 6 (Voigt xx yy zz yz xz xy) or 9 (3×3).")
    tensor = _as_stress(array, where)
    return tensor if np.isfinite(tensor).all() else None


def structure_from_atoms(atoms: Atoms, keys: LabelKeys = LabelKeys(), where: str = "frame") -> LabelledStructure:
    """Labels of one ASE frame as a :class:`LabelledStructure`; NaN labels count as missing."""
    energy = _find(atoms, "energy", keys.energy)
    if energy is not None:
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: energy {energy!r} is not a single number (eV).") from None
        energy = energy if np.isfinite(energy) else None
    forces = _find(atoms, "forces", keys.forces)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise ValueError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3) eV/Å.")
        forces = forces if np.isfinite(forces).all() else None
    stress = _find(atoms, "stress", keys.stress)
    if stress is not None:
        stress = _as_stress(stress, where)
        stress = stress if np.isfinite(stress).all() else None
    dipole = _find(atoms, "dipole", keys.dipole)
    dipole = None if dipole is None else _as_vector(dipole, where, "dipole", "e·Å")
    polarizability = _find(atoms, "polarizability", keys.polarizability)
    polarizability = None if polarizability is None else _as_symmetric(polarizability, where, "polarizability")
    return LabelledStructure(
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        energy=energy,
        forces=forces,
        stress=stress,
        dipole=dipole,
        polarizability=polarizability,
        charge=float(atoms.info.get("charge", atoms.get_initial_charges().sum())),
        config_type=str(atoms.info.get("config_type", DEFAULT_CONFIG_TYPE)),
        info={k: v for k, v in atoms.info.items() if k != "config_type"},
    )


def _available_keys(frames: list[Atoms]) -> str:
    info = sorted({k for a in frames for k in a.info})
    arrays = sorted({k for a in frames for k in a.arrays} - {"numbers", "positions"})
    results = sorted({k for a in frames if a.calc is not None for k in getattr(a.calc, "results", {})})
    return f"info keys {info}, per-atom arrays {arrays}, calculator results {results}"


def _frame_list(indices: list[int]) -> str:
    """"frame 3 has" / "4 frames (3, 8, 9, …) have"."""
    if len(indices) == 1:
        return f"frame {indices[0]} has"
    shown = ", ".join(str(i) for i in indices[:5]) + (", …" if len(indices) > 5 else "")
    return f"{len(indices)} frames ({shown}) have"


def _warn_dropped_labels(frames, structures, quantity: str, key: str | None, source: str) -> None:
    """Warn, with counts and frame numbers, where frames lose a label that other frames have:
    a non-finite value (NaN/inf), or no value under the key (for stress: periodic frames only).
    A quantity that no frame has is silent."""
    labelled = [getattr(s, quantity) is not None for s in structures]
    if not any(labelled):
        return
    found = [_find(a, quantity, key) is not None for a in frames]
    non_finite = [i for i, (f, ok) in enumerate(zip(found, labelled)) if f and not ok]
    # a molecule beside crystals has no stress to lose
    missing = [i for i, (f, a) in enumerate(zip(found, frames)) if not f and (quantity != "stress" or a.pbc.all())]
    name = repr(key) if key else "any of the usual keys"
    for indices, why in ((non_finite, f"non-finite {quantity} values (NaN or inf)"),
                         (missing, f"no {quantity} under {name}")):
        if indices:
            warnings.warn(
                f"{source}: {_frame_list(indices)} {why}: their {quantity} labels are dropped "
                f"({sum(labelled)} of {len(frames)} frames keep one).",
                stacklevel=3,
            )


def structures_from_frames(
    frames: Iterable[Atoms], keys: LabelKeys = LabelKeys(), source: str = "input", require_labels: bool = True
) -> list[LabelledStructure]:
    """Convert ASE frames, checking that every explicitly named key occurs in at least one frame."""
    frames = list(frames)
    empty = [i for i, a in enumerate(frames) if len(a) == 0]
    if empty:
        raise ValueError(f"{source}: {_frame_list(empty)} no atoms; remove {'it' if len(empty) == 1 else 'them'}.")
    structures = [structure_from_atoms(a, keys, f"{source}, frame {i}") for i, a in enumerate(frames)]
    for quantity in ("energy", "forces", "stress"):
        key = getattr(keys, quantity)
        if key is not None and frames and all(getattr(s, quantity) is None for s in structures):
            raise ValueError(
                f"{source}: no frame has a {quantity} under the key {key!r}. Available: {_available_keys(frames)}. "
                f"Fix --{quantity}-key (or {quantity}_key in the config)."
            )
        _warn_dropped_labels(frames, structures, quantity, key, source)
    if require_labels and frames and not any(s.has_labels for s in structures):
        raise ValueError(
            f"{source}: found no energy, forces or stress in any frame. Available: {_available_keys(frames)}. "
            "Name the keys with --energy-key/--forces-key/--stress-key."
        )
    return structures


def _read_ase_db(path: Path) -> list[Atoms]:
    """Frames of an ASE database with key-value pairs in ``info`` and per-atom data in ``arrays``."""
    import ase.db

    frames = []
    with ase.db.connect(str(path)) as db:
        for row in db.select():
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            for name, value in row.data.items():
                value = np.asarray(value)
                if value.ndim and value.shape[0] == len(atoms):
                    atoms.arrays[name] = value
                else:
                    atoms.info[name] = value
            frames.append(atoms)
    return frames


def read_frames(path: str | os.PathLike, index: str = ":") -> list[Atoms]:
    """The ASE frames ``index`` selects (``ase.io.read`` syntax: ":", ":5", "-1") of an ASE database
    (.db) or any file ``ase.io.read`` understands; ValueError naming the file when it is empty or
    unreadable, or holds no frame."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory; give a structure file.")
    if not path.is_file():
        raise FileNotFoundError(f"Structure file {str(path)!r} does not exist.")
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty; give a file with at least one structure.")
    try:
        if path.suffix.lower() in ASE_DB_SUFFIXES:
            frames = _read_ase_db(path)
            frames = frames[_as_slice(index)] if frames else frames
        else:
            frames = ase.io.read(str(path), index=index)
    except Exception as err:  # ASE raises many types for unreadable files
        raise ValueError(
            f"Could not read {str(path)!r} as structures ({type(err).__name__}: {err}). Check that the file is "
            "complete and in a format ASE reads (extxyz, POSCAR, cif, .db, …), or an eqcalc .h5 file."
        ) from None
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    if not frames:
        raise ValueError(f"{str(path)!r} holds no structure.")
    return frames


def _as_slice(index: str) -> slice:
    """An ``ase.io.read`` index string as a slice over frames ("-1" selects the last one)."""
    if ":" not in index:
        position = int(index)
        return slice(position, position + 1 if position != -1 else None)
    return slice(*(int(part) if part else None for part in index.split(":")))


def read_structures(
    path: str | os.PathLike,
    keys: LabelKeys = LabelKeys(),
    *,
    require_labels: bool = True,
) -> list[LabelledStructure]:
    """All labelled structures in ``path``: eqcalc HDF5 (.h5/.hdf5), ASE database (.db) or any ASE format."""
    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        from .hdf5 import read_hdf5

        return read_hdf5(path)
    frames = read_frames(path)
    if not frames:
        raise ValueError(f"{str(path)!r} holds no structures.")
    return structures_from_frames(frames, keys, source=str(path), require_labels=require_labels)
