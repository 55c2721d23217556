"""Neighbour lists: which atom pairs (i, j, image shift) lie within a cutoff.

Built on matscipy's linked-cell neighbour list (O(N), handles cells smaller than
the cutoff by enumerating as many periodic images as needed).
"""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list


def _binning_cell(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> np.ndarray:
    """Return a non-singular cell for matscipy's binning.

    Periodic lattice vectors are kept exactly. If the cell is singular (an
    isolated molecule with no cell, or a slab whose non-periodic vector is zero),
    the non-periodic vectors are replaced by vectors orthogonal to the periodic
    ones and long enough to contain every atom. No image shift is ever produced
    along a non-periodic direction, so the stand-in vectors never enter the
    geometry, the energy or the stress.
    """
    if abs(np.linalg.det(cell)) > 1e-8 * max(1.0, np.abs(cell).max()) ** 3:
        return cell
    periodic = cell[pbc]
    if periodic.shape[0] and np.linalg.matrix_rank(periodic, tol=1e-8) < periodic.shape[0]:
        raise ValueError(
            f"The lattice vectors of the periodic directions {periodic.tolist()} are zero "
            "or linearly dependent. Give every periodic direction its own lattice vector, "
            "or set pbc=False along it."
        )
    # Orthonormal basis of the complement of the periodic vectors.
    if periodic.shape[0]:
        _, _, vt = np.linalg.svd(periodic)
        complement = vt[periodic.shape[0]:]
    else:
        complement = np.eye(3)
    if len(positions):
        extent = positions @ complement.T
        span = extent.max(axis=0) - extent.min(axis=0)
    else:
        span = np.zeros(len(complement))
    binning = cell.copy()
    for axis, vector, length in zip(np.flatnonzero(~pbc), complement, span):
        binning[axis] = vector * (length + 2.0 * cutoff + 1.0)
    return binning


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, S) with |r_j + S·cell − r_i| < cutoff, i≠j or S≠0.

    Args:
        positions: (N, 3) Cartesian positions, Å.
        cell: (3, 3) lattice vectors as rows, Å (may be zero for a molecule).
        pbc: (3,) periodic flags.
        cutoff: radius, Å.

    Returns:
        edge_index: (2, E) int64, row 0 = centre atom i, row 1 = neighbour j.
        shifts: (E, 3) int64 integer image shifts S of atom j.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    binning = _binning_cell(positions, cell, pbc, cutoff)
    i, j, shifts = _matscipy_neighbour_list(
        "ijS", positions=positions, cell=binning, pbc=pbc, cutoff=float(cutoff)
    )
    edge_index = np.stack([i, j]).astype(np.int64, copy=False)
    return edge_index, shifts.astype(np.int64, copy=False)
