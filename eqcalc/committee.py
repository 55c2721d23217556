"""Committees: several models of the same elements and cutoff evaluated on one neighbour list,
their mean as the prediction and their spread as its uncertainty.

The spread is the sample standard deviation over the M members (ddof = 1):

    energy_std = std_m E_m                                  (eV)
    forces_std_i = sqrt( Σ_m |F_mi − F̄_i|² / (M − 1) )      (eV/Å, one value per atom)
    stress_std = std_m σ_m, per Voigt component              (eV/Å³)

``forces_std`` is a rotation-invariant length per atom (the root of the trace of the force
covariance), the quantity uncertainty-aware MD and frame selection look at.

A committee folder (``eqcalc train --committee N``) lists its members in ``committee.json``;
:func:`resolve_models` turns such a folder into its member files, so
``EquivariantCalculator("FOLDER")`` loads the committee.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .models.base import AtomisticModel


def check_members(members: Sequence[AtomisticModel]) -> None:
    """Raise ValueError unless the members can share one neighbour list and one set of elements:
    the same cutoff and the same species."""
    if not members:
        raise ValueError("A committee needs at least one model.")
    first = members[0]
    for k, member in enumerate(members[1:], start=1):
        if member.cutoff != first.cutoff:
            raise ValueError(
                f"Committee member {k} has cutoff {member.cutoff:g} Å, member 0 has {first.cutoff:g} Å; the members "
                "share one neighbour list, so train them with the same cutoff."
            )
        if sorted(member.species) != sorted(first.species):
            raise ValueError(
                f"Committee member {k} knows elements {sorted(member.species)}, member 0 knows "
                f"{sorted(first.species)}; train every member on the same elements."
            )


def committee_results(energies: np.ndarray, forces: np.ndarray, stress: np.ndarray | None = None) -> dict:
    """ASE results of a committee from its members' predictions.

    Args:
        energies: (M, N) per-atom energies of each member, eV.
        forces: (M, N, 3) eV/Å.
        stress: (M, 6) Voigt stress of each member, eV/Å³, or None.

    Returns:
        "energy", "free_energy" (eV), "energies" (N,), "forces" (N, 3) and "stress" (6,): the
        members' mean; with two members or more also "energy_std", "forces_std" (N,),
        "stress_std" (6,) as in the module docstring, and each member's "energy_committee" (M,)
        and "forces_committee" (M, N, 3).
    """
    size = energies.shape[0]
    member_energy = np.array([math.fsum(row) for row in energies])  # correctly rounded: clean finite differences
    energy = math.fsum(member_energy) / size
    results = {"energy": energy, "free_energy": energy, "energies": energies.mean(axis=0),
               "forces": forces.mean(axis=0)}
    if stress is not None:
        results["stress"] = stress.mean(axis=0)
    if size > 1:
        deviation = forces - results["forces"]
        results["energy_std"] = float(member_energy.std(ddof=1))
        results["forces_std"] = np.sqrt(np.einsum("mnk,mnk->n", deviation, deviation) / (size - 1))
        if stress is not None:
            results["stress_std"] = stress.std(axis=0, ddof=1)
        results["energy_committee"] = member_energy
        results["forces_committee"] = forces.copy()
    return results


# ---------------------------------------------------------------- committee folders

#: the file in a committee folder (``eqcalc train --committee N``) that lists its members
COMMITTEE_FILE = "committee.json"
COMMITTEE_FORMAT = "eqcalc-committee"


def write_committee_file(folder: str | os.PathLike, members: Sequence[str], bootstrap: bool, seeds: Sequence[int]) -> Path:
    """Write ``folder/committee.json`` atomically and return its path::

        {"format": "eqcalc-committee", "format_version": 1, "size": M,
         "members": [model file paths relative to folder], "bootstrap": bool, "seeds": [int] * M}
    """
    from .atomic_io import atomic_path

    record = {"format": COMMITTEE_FORMAT, "format_version": 1, "size": len(members), "members": list(members),
              "bootstrap": bool(bootstrap), "seeds": [int(seed) for seed in seeds]}
    path = Path(folder) / COMMITTEE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def committee_files(path: str | os.PathLike) -> list[Path]:
    """The member model files of a committee folder, or of its ``committee.json`` (paths in the
    file are relative to its folder).

    Raises:
        FileNotFoundError: no committee.json (e.g. training not finished), or a member file missing.
        ValueError: committee.json is not valid JSON or not a committee record.
    """
    path = Path(path)
    file = path / COMMITTEE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"{str(file.parent)!r} is a directory with no {COMMITTEE_FILE}: neither a model file nor a finished "
            f"committee (eqcalc train --committee N writes {COMMITTEE_FILE} once every member has finished; --resume "
            "finishes an interrupted one). For a single run, pass its model file (FOLDER/best_model.pt)."
        )
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(file)!r} is damaged ({err}); eqcalc train --resume (same options) rewrites it.") from None
    members = record.get("members") if isinstance(record, dict) else None
    if (not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members)
            or record.get("format") != COMMITTEE_FORMAT or record.get("size") != len(members)):
        raise ValueError(
            f"{str(file)!r} is not an eqcalc committee record (it needs format {COMMITTEE_FORMAT!r} and a non-empty "
            "list 'members' of model files, 'size' long); eqcalc train --resume (same options) rewrites it."
        )
    files = [file.parent / member for member in members]
    missing = [member for member, member_file in zip(members, files) if not member_file.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(file)!r} lists member model files that do not exist: {missing}. Restore them, or delete those "
            "members' folders and run eqcalc train --resume (same options) to train them again."
        )
    return files


def resolve_models(model):
    """A committee folder or committee.json path → its member model files (:func:`committee_files`);
    anything else (a model, a model file path, a list) unchanged."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir() or path.name == COMMITTEE_FILE:
            return committee_files(path)
    return model
