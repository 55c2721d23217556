"""A neighbour list reused across MD/optimisation steps (Verlet list with a skin)."""

from __future__ import annotations

import numpy as np

from .neighbors import neighbour_list


class VerletNeighbourList:
    """Pairs within ``cutoff + skin``, rebuilt only when they may have gone stale.

    The list stays valid (it contains every pair now within ``cutoff``) as long as
    no atom has moved more than skin/2 since it was built and the cell, pbc and
    atomic numbers are unchanged; any of those triggers a rebuild. Callers keep
    only the pairs currently within ``cutoff``.
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        if skin < 0:
            raise ValueError(f"skin must be ≥ 0 Å, got {skin}.")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.num_builds = 0
        self._reference: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.edge_index = np.zeros((2, 0), dtype=np.int64)
        self.shifts = np.zeros((0, 3), dtype=np.int64)

    def is_stale(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray) -> bool:
        if self._reference is None:
            return True
        ref_positions, ref_cell, ref_pbc, ref_numbers = self._reference
        if positions.shape != ref_positions.shape or not np.array_equal(numbers, ref_numbers):
            return True
        if not np.array_equal(cell, ref_cell) or not np.array_equal(pbc, ref_pbc):
            return True
        max_sq = np.einsum("ij,ij->i", positions - ref_positions, positions - ref_positions).max(initial=0.0)
        return bool(max_sq > (0.5 * self.skin) ** 2)

    def update(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray) -> bool:
        """Rebuild if stale; return whether it rebuilt. Afterwards ``edge_index``/``shifts`` hold the list."""
        if not self.is_stale(positions, cell, pbc, numbers):
            return False
        self.edge_index, self.shifts = neighbour_list(positions, cell, pbc, self.cutoff + self.skin)
        self._reference = (positions.copy(), cell.copy(), pbc.copy(), numbers.copy())
        self.num_builds += 1
        return True
