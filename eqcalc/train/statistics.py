"""Statistics of the training set that fix a model's energy shift and scale.

    E_i = energy_scale · network_i + E0[Z_i]

* E0 per element: from isolated-atom frames when every element has one, else by least
  squares, min_E0 Σ_k (E_k − Σ_Z n_kZ E0_Z)² over the training structures with an energy.
  (When all structures share one composition the problem is rank deficient and the
  minimum-norm solution is used; only the sum Σ n_Z E0_Z is then defined.)
* energy_scale: the RMS force component (eV/Å), or, without forces, the standard deviation of
  the per-atom energy left after subtracting E0.
* avg_num_neighbors: mean number of neighbours within the cutoff per atom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..data.dataset import GraphDataset
from ..data.labelled import LabelledStructure

ATOMIC_ENERGY_MODES = ("auto", "isolated", "least_squares")


def composition_matrix(structures: list[LabelledStructure], species: list[int]) -> np.ndarray:
    """(S, num_species) count of each element in each structure."""
    column = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, structure in enumerate(structures):
        for z, n in zip(*np.unique(structure.numbers, return_counts=True)):
            counts[row, column[int(z)]] = n
    return counts


def least_squares_atomic_energies(
    structures: list[LabelledStructure], species: list[int], predicted: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """(num_species,) eV: the E0 minimising the squared error of Σ_Z n_Z E0_Z against the energies
    (or, given ``predicted`` (S,) eV per structure, the E0 shift minimising it against the residuals
    energy − predicted), and the rank of the composition matrix (below num_species: only that many
    combinations are fixed; the minimum-norm solution is returned)."""
    rows = [k for k, s in enumerate(structures) if s.energy is not None]
    if not rows:
        raise ValueError(
            "No training structure has an energy, so reference energies cannot be fitted. Give them "
            "explicitly (atomic_energies: {H: -13.6, ...}) or add energies to the data."
        )
    counts = composition_matrix([structures[k] for k in rows], species)
    targets = np.array([structures[k].energy for k in rows])
    if predicted is not None:
        targets = targets - np.asarray(predicted, dtype=np.float64)[rows]
    solution, _, rank, _ = np.linalg.lstsq(counts, targets, rcond=None)
    return solution, int(rank)


def isolated_atom_energies(structures: list[LabelledStructure]) -> dict[int, float]:
    """Atomic number → energy (eV) of the isolated-atom frames that carry an energy."""
    return {int(s.numbers[0]): float(s.energy) for s in structures if s.is_isolated_atom() and s.energy is not None}


def _given_atomic_energies(values: Mapping[Any, float], species: list[int]) -> np.ndarray:
    by_number = {}
    for key, value in values.items():
        z = atomic_numbers.get(key) if isinstance(key, str) else int(key)
        if z is None:
            raise ValueError(f"atomic_energies: {key!r} is not an element symbol or atomic number.")
        by_number[z] = float(value)
    missing = [chemical_symbols[z] for z in species if z not in by_number]
    if missing:
        raise ValueError(f"atomic_energies lacks the elements {missing} of the training data; add them (eV).")
    return np.array([by_number[z] for z in species])


def force_rms(structures: list[LabelledStructure]) -> float | None:
    """RMS of all force components with labels (eV/Å), or None if there are none."""
    forces = [s.forces for s in structures if s.forces is not None]
    if not forces:
        return None
    return float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))


def per_atom_energy_std(structures: list[LabelledStructure], species: list[int], e0: np.ndarray) -> float | None:
    """Standard deviation (eV/atom) of (E − Σ n_Z E0_Z)/N over labelled structures, or None."""
    labelled = [s for s in structures if s.energy is not None]
    if len(labelled) < 2:
        return None
    residual = np.array([s.energy for s in labelled]) - composition_matrix(labelled, species) @ e0
    return float(np.std(residual / np.array([s.num_atoms for s in labelled])))


@dataclass
class DatasetStatistics:
    """What the model needs from the training data (all stored in the model file)."""

    species: list[int]
    atomic_energies: list[float]
    atomic_energies_source: str
    energy_scale: float
    avg_num_neighbors: float

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model``."""
        return {
            "species": self.species,
            "atomic_energies": self.atomic_energies,
            "energy_scale": self.energy_scale,
            "avg_num_neighbors": self.avg_num_neighbors,
        }

    def summary(self) -> str:
        e0 = ", ".join(f"{chemical_symbols[z]}: {e:.6f}" for z, e in zip(self.species, self.atomic_energies))
        return (
            f"Reference energies E0 (eV, {self.atomic_energies_source}): {e0}\n"
            f"Energy scale: {self.energy_scale:.6g} eV\n"
            f"Average number of neighbours: {self.avg_num_neighbors:.4f}"
        )


def compute_statistics(
    train: GraphDataset,
    species: list[int],
    *,
    atomic_energies: str | Mapping[Any, float] = "auto",
    energy_scale: float | str = "auto",
    avg_num_neighbors: float | str = "auto",
) -> DatasetStatistics:
    """Statistics of the training set; a number (or mapping) given for an entry is used as is.

    Args:
        train: training graphs (their cutoff defines the neighbours).
        species: atomic numbers of the model, sorted.
        atomic_energies: "auto" (isolated atoms if every element has one, else least squares),
            "isolated", "least_squares", or a mapping element symbol/number → eV.
    """
    structures = train.structures
    if isinstance(atomic_energies, Mapping):
        e0, source = _given_atomic_energies(atomic_energies, species), "given"
    elif atomic_energies in ATOMIC_ENERGY_MODES:
        isolated = isolated_atom_energies(structures)
        complete = all(z in isolated for z in species)
        if atomic_energies == "isolated" and not complete:
            missing = [chemical_symbols[z] for z in species if z not in isolated]
            raise ValueError(
                f"atomic_energies: isolated needs an isolated-atom frame for every element; missing {missing}."
            )
        if atomic_energies == "isolated" or (atomic_energies == "auto" and complete):
            e0, source = np.array([isolated[z] for z in species]), "isolated atoms"
        else:
            (e0, rank), source = least_squares_atomic_energies(structures, species), "least squares"
            if rank < len(species):
                source += (
                    f"; the training compositions fix only {rank} combination(s) of the {len(species)} E0s, so these "
                    "are the minimum-norm choice and isolated-atom energies of this model mean nothing: add "
                    "isolated-atom frames or give atomic_energies to fix them"
                )
    else:
        raise ValueError(
            f"atomic_energies must be one of {ATOMIC_ENERGY_MODES} or a mapping element → eV, got {atomic_energies!r}."
        )
    if energy_scale == "auto":
        energy_scale = force_rms(structures) or per_atom_energy_std(structures, species, e0) or 1.0
    if avg_num_neighbors == "auto":
        avg_num_neighbors = train.average_num_neighbors() or 1.0
    return DatasetStatistics(
        species=list(species),
        atomic_energies=[float(x) for x in e0],
        atomic_energies_source=source,
        energy_scale=float(energy_scale),
        avg_num_neighbors=float(avg_num_neighbors),
    )
