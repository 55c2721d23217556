"""Committees: several models of the same elements and cutoff evaluated on one neighbour list,
their mean as the prediction and their spread as its uncertainty.

The spread is the sample standard deviation over the M members (ddof = 1):

    energy_std = std_m E_m                                  (eV)
    forces_std_i = sqrt( Σ_m |F_mi − F̄_i|² / (M − 1) )      (eV/Å, one value per atom)
    stress_std = std_m σ_m, per Voigt component              (eV/Å³)

``forces_std`` is a rotation-invariant length per atom (the root of the trace of the force
covariance), the quantity uncertainty-aware MD and frame selection look at.
"""

from __future__ import annotations

import math
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
