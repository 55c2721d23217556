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

    The pairs come in :func:`~eqcalc.data.neighbors.canonical_order`, so the pairs within
    ``cutoff`` have the same order whenever the list was built: results at given positions do not
    depend on the history of the run (a resumed MD run repeats the uninterrupted one bit for bit).
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

    def update(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, numbers: np.ndarray) -> bool:
        """Rebuild if stale; return whether it rebuilt. Afterwards ``edge_index``/``shifts`` hold the list."""
        motion = self._motion(positions, cell, pbc, numbers)
        if motion is not None:
            displacements, deformation = motion
            displacements = self._follow_lattice_jumps(displacements, cell, pbc)
            shrink = 1.0 if deformation is None else np.linalg.svd(deformation, compute_uv=False).min()
            max_displacement = np.sqrt(np.einsum("ij,ij->i", displacements, displacements).max(initial=0.0))
            if shrink * (self.cutoff + self.skin) - 2.0 * max_displacement >= self.cutoff:
                return False
        self.edge_index, self.shifts = neighbour_list(positions, cell, pbc, self.cutoff + self.skin)
        self._reference = (positions.copy(), cell.copy(), pbc.copy(), numbers.copy())
        self.num_builds += 1
        return True

    def _motion(self, positions, cell, pbc, numbers) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(N, 3) non-affine displacements δ (Å) since the build and the deformation M (None: the
        cell is unchanged), or None when the list must be rebuilt whatever the motion (no list
        yet; atoms, numbers or pbc changed; the build's cell is singular)."""
        if self._reference is None:
            return None
        ref_positions, ref_cell, ref_pbc, ref_numbers = self._reference
        if positions.shape != ref_positions.shape or not np.array_equal(numbers, ref_numbers):
            return None
        if not np.array_equal(pbc, ref_pbc):
            return None
        if np.array_equal(cell, ref_cell):
            return positions - ref_positions, None
        if abs(np.linalg.det(ref_cell)) < 1e-9:
            return None
        deformation = np.linalg.solve(ref_cell, cell)  # M with h' = h M
        return positions - ref_positions @ deformation, deformation

    def _follow_lattice_jumps(self, displacements: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
        """Absorb whole lattice vectors by which atoms jumped since the build (``atoms.wrap()``,
        or MD codes wrapping atoms back into the cell) into the reference positions and the pair
        shifts, so wrapping alone never forces a rebuild, and return the displacements without
        them. An atom moved by n lattice vectors keeps every pair vector r_j − r_i + S·h if each
        shift gains n_i − n_j. Real motion between calls is far below half a cell vector, so
        rounding finds n exactly."""
        if not pbc.any() or abs(np.linalg.det(cell)) < 1e-9:
            return displacements  # nothing can wrap
        fractional = np.linalg.solve(cell.T, displacements.T).T
        jumps = np.where(pbc, np.rint(fractional), 0.0).astype(np.int64)
        if not jumps.any():
            return displacements
        i, j = self.edge_index
        self.shifts = self.shifts + jumps[i] - jumps[j]
        ref_positions, ref_cell, ref_pbc, ref_numbers = self._reference
        self._reference = (ref_positions + jumps @ ref_cell, ref_cell, ref_pbc, ref_numbers)
        return displacements - jumps @ cell
