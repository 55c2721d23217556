"""Checks that turn bad input into a clear error instead of a silent NaN."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

MIN_DISTANCE = 0.1  # Å; closer atoms are almost surely an input error


def check_positions(positions: np.ndarray, cell: np.ndarray) -> None:
    """Raise ValueError naming the atoms whose positions (or the cell) are NaN or infinite."""
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise ValueError(
            f"Atoms {bad[:10].tolist()}{' …' if bad.size > 10 else ''} have NaN or infinite positions. "
            "Check the structure file or the step that produced it."
        )
    if not np.isfinite(cell).all():
        raise ValueError("The cell has NaN or infinite entries. Check the structure's lattice vectors.")


def check_species(numbers: np.ndarray, species: Sequence[int]) -> None:
    """Raise ValueError naming elements in ``numbers`` that the model was not trained on."""
    unknown = sorted(set(np.unique(numbers).tolist()) - set(species))
    if unknown:
        names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in species)
        raise ValueError(
            f"The structure contains {names}, which the model does not know (it knows {known}). "
            "Use a model trained on these elements, or remove those atoms."
        )


def check_min_distance(
    edge_index: np.ndarray, distances: np.ndarray, threshold: float = MIN_DISTANCE
) -> None:
    """Raise ValueError naming the closest pair if any edge is shorter than ``threshold`` Å."""
    if distances.size == 0:
        return
    k = int(np.argmin(distances))
    if distances[k] < threshold:
        raise CloseContactError(int(edge_index[0, k]), int(edge_index[1, k]), float(distances[k]), threshold)


class CloseContactError(ValueError):
    """Two atoms closer than the allowed minimum distance; the message reads as a problem of the input."""

    def __init__(self, i: int, j: int, distance: float, threshold: float):
        self.i, self.j, self.distance, self.threshold = i, j, distance, threshold
        super().__init__(
            f"Atoms {i} and {j} are {distance:.4f} Å apart (closer than {threshold} Å): overlapping "
            "atoms, usually a duplicated atom or a wrong unit (Bohr vs Å, fractional vs Cartesian)."
        )

    def during_dynamics(self, step: int) -> str:
        """The same contact described as what happened at ``step`` of a run that started sound."""
        return (
            f"atoms {self.i} and {self.j} came {self.distance:.4f} Å apart at step {step} (closer than "
            f"min_distance {self.threshold} Å): they collided, so the model let the structure leave its "
            "training data (or the timestep is too large)"
        )
