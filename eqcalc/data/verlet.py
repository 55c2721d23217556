"""A neighbour list reused across MD/optimisation steps (Verlet list with a skin)."""

from __future__ import annotations

import numpy as np

from .neighbors import neighbour_list


class VerletNeighbourList:
    """Pairs within ``cutoff + skin``, rebuilt only when they may have gone stale.

    The list must contain every pair now within ``cutoff``. Write the step since the build as
    an affine map of the cell plus non-affine displacements: cell h → h' = h M (rows are
    lattice vectors) and r_i → r_i M + δ_i. Every pair vector (periodic images included) then
    maps as d' = d M + δ_j − δ_i, so a pair outside the list (|d| ≥ cutoff + skin) stays
    outside the cutoff as long as

        σ_min(M) · (cutoff + skin) − 2 max_i |δ_i| ≥ cutoff,

    which is the usual "no atom moved more than skin/2" when the cell is unchanged (M = 1),
    and lets NPT runs and cell relaxations keep the list through small cell changes. A change
    of pbc or atomic numbers, or a change from a singular cell, triggers a rebuild. Callers
    keep only the pairs currently within ``cutoff``.
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
        if not np.array_equal(pbc, ref_pbc):
            return True
        if np.array_equal(cell, ref_cell):
            displacements, shrink = positions - ref_positions, 1.0
        else:
            if abs(np.linalg.det(ref_cell)) < 1e-9:
                return True
            deformation = np.linalg.solve(ref_cell, cell)  # M with h' = h M
            displacements = positions - ref_positions @ deformation
            shrink = np.linalg.svd(deformation, compute_uv=False).min()
        max_displacement = np.sqrt(np.einsum("ij,ij->i", displacements, displacements).max(initial=0.0))
        return bool(shrink * (self.cutoff + self.skin) - 2.0 * max_displacement < self.cutoff)

    def update(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray) -> bool:
        """Rebuild if stale; return whether it rebuilt. Afterwards ``edge_index``/``shifts`` hold the list."""
        self._follow_lattice_jumps(positions, cell, pbc)
        if not self.is_stale(positions, cell, pbc, numbers):
            return False
        self.edge_index, self.shifts = neighbour_list(positions, cell, pbc, self.cutoff + self.skin)
        self._reference = (positions.copy(), cell.copy(), pbc.copy(), numbers.copy())
        self.num_builds += 1
        return True

    def _follow_lattice_jumps(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
        """Absorb whole lattice vectors by which atoms jumped since the build (``atoms.wrap()``,
        or MD codes wrapping atoms back into the cell) into the reference positions and the pair
        shifts, so wrapping alone never forces a rebuild. An atom moved by n lattice vectors keeps
        every pair vector r_j − r_i + S·h if each shift gains n_i − n_j. Real motion between
        calls is far below half a cell vector, so rounding finds n exactly."""
        if self._reference is None:
            return
        ref_positions, ref_cell, ref_pbc, ref_numbers = self._reference
        if (positions.shape != ref_positions.shape or not np.array_equal(pbc, ref_pbc) or not pbc.any()
                or abs(np.linalg.det(cell)) < 1e-9 or abs(np.linalg.det(ref_cell)) < 1e-9):
            return  # is_stale rebuilds or nothing can wrap
        deformation = np.linalg.solve(ref_cell, cell)
        fractional = np.linalg.solve(cell.T, (positions - ref_positions @ deformation).T).T
        jumps = np.where(pbc, np.rint(fractional), 0.0).astype(np.int64)
        if not jumps.any():
            return
        i, j = self.edge_index
        self.shifts = self.shifts + jumps[i] - jumps[j]
        self._reference = (ref_positions + jumps @ ref_cell, ref_cell, ref_pbc, ref_numbers)
