"""Neighbour lists: which atom pairs (i, j, image shift) lie within a cutoff.

Built on matscipy's linked-cell neighbour list (O(N), handles cells smaller than
the cutoff by enumerating as many periodic images as needed), binned over the atoms'
extent rather than over vacuum (see :func:`_binning_cell`, :func:`_unwrap_sparse_directions`).
"""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list


def _unwrap_sparse_directions(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Periodic directions along which no pair can reach across the boundary, and where the atoms
    are moved to, so that such a direction can be searched as if it were not periodic.

    Along periodic direction d the atoms' fractional coordinates f_d leave a largest gap g (on the
    circle); every vector with a non-zero image shift along d then has a fractional component of
    at least g along d, so a length of at least g · h_d (h_d: the spacing of the lattice planes).
    If that exceeds the cutoff, the atoms are shifted by whole lattice vectors so that they lie on
    one side of the gap, and the direction needs no images: a molecule in a large periodic vacuum
    box needs no linked-cell grid over all of its vacuum.

    Returns:
        sparse: (3,) bool, the periodic directions that can be searched without images.
        moved: (N, 3) int64 lattice shifts n with which the positions become positions − n·cell.
    """
    moved = np.zeros((len(positions), 3), dtype=np.int64)
    sparse = np.zeros(3, dtype=bool)
    if not pbc.any() or len(positions) == 0 or abs(np.linalg.det(cell)) <= 1e-8 * max(1.0, np.abs(cell).max()) ** 3:
        return sparse, moved
    reciprocal = np.linalg.inv(cell)  # fractional = positions @ reciprocal
    fractional = positions @ reciprocal
    for d in np.flatnonzero(pbc):
        spacing = 1.0 / np.linalg.norm(reciprocal[:, d])
        wrapped = np.sort(fractional[:, d] - np.floor(fractional[:, d]))
        gaps = np.diff(np.concatenate([wrapped, wrapped[:1] + 1.0]))
        largest = int(np.argmax(gaps))
        if gaps[largest] * spacing > cutoff * (1.0 + 1e-9):
            start = wrapped[(largest + 1) % len(wrapped)]  # the first atom after the gap
            moved[:, d] = np.floor(fractional[:, d] - start + 1e-12).astype(np.int64)
            sparse[d] = True
    return sparse, moved


def _binning_cell(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """A cell and origin for matscipy's binning that span the atoms, not the vacuum.

    Periodic lattice vectors are kept exactly. The non-periodic ones (also those of a singular
    cell: an isolated molecule with no cell, or a slab whose non-periodic vector is zero) are
    replaced by vectors orthogonal to the periodic ones, long enough to contain every atom with a
    cutoff to spare, from an origin at the atoms' lower edge. No image shift is ever produced along
    a non-periodic direction, so the stand-in vectors never enter the geometry, the energy or the
    stress.

    Returns:
        (3, 3) binning cell (rows), (3,) its origin, Å.
    """
    periodic = cell[pbc]
    if periodic.shape[0] and np.linalg.matrix_rank(periodic, tol=1e-8) < periodic.shape[0]:
        raise ValueError(
            f"The lattice vectors of the periodic directions {periodic.tolist()} are zero "
            "or linearly dependent. Give every periodic direction its own lattice vector, "
            "or set pbc=False along it."
        )
    if pbc.all():
        return cell, np.zeros(3)
    # Orthonormal basis of the complement of the periodic vectors.
    if periodic.shape[0]:
        _, _, vt = np.linalg.svd(periodic)
        complement = vt[periodic.shape[0]:]
    else:
        complement = np.eye(3)
    extent = positions @ complement.T if len(positions) else np.zeros((1, len(complement)))
    lower, span = extent.min(axis=0), extent.max(axis=0) - extent.min(axis=0)
    binning = cell.copy()
    for axis, vector, length in zip(np.flatnonzero(~pbc), complement, span):
        binning[axis] = vector * (length + 2.0 * cutoff + 1.0)
    origin = (lower - cutoff - 0.5) @ complement
    return binning, origin


def canonical_order(edge_index: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (2, E) and their image shifts (E, 3) sorted by (i, j, shift): an order that
    depends only on the set of pairs, not on where the atoms were when it was found."""
    if shifts.size == 0:
        return edge_index, shifts
    reach = int(np.abs(shifts).max()) + 1
    width = 2 * reach + 1
    image = ((shifts[:, 0] + reach) * width + shifts[:, 1] + reach) * width + shifts[:, 2] + reach
    n = int(edge_index.max()) + 1
    order = np.argsort((edge_index[0] * n + edge_index[1]) * width**3 + image, kind="stable")
    return edge_index[:, order], shifts[order]


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, S) with |r_j + S·cell − r_i| < cutoff, i≠j or S≠0, in
    :func:`canonical_order`.

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
    sparse, moved = _unwrap_sparse_directions(positions, cell, pbc, cutoff)
    searched_pbc = pbc & ~sparse
    searched = positions - moved @ cell if sparse.any() else positions
    binning, origin = _binning_cell(searched, cell, searched_pbc, cutoff)
    i, j, shifts = _matscipy_neighbour_list(
        "ijS", positions=searched, cell=binning, pbc=searched_pbc, cutoff=float(cutoff), cell_origin=origin
    )
    edge_index = np.stack([i, j]).astype(np.int64, copy=False)
    shifts = shifts.astype(np.int64, copy=False)
    if sparse.any():  # r_j − n_j·cell + S'·cell − (r_i − n_i·cell) = r_j + (S' + n_i − n_j)·cell − r_i
        shifts = shifts + moved[edge_index[0]] - moved[edge_index[1]]
    return canonical_order(edge_index, shifts)
