"""Split one large structure into pieces a model can evaluate one at a time, exactly.

A message-passing model with L rounds gives atom i an energy that depends only on atoms up to
L neighbour-list hops away. So for a group C of "owned" atoms, the subgraph holding every
atom within L hops of C (the halo) and every edge that ends on an atom within L−1 hops gives
the owned atoms exactly the per-atom energies of the whole graph. Summing owned energies, and
their gradients with respect to all subgraph positions (and the strain), over the groups gives
the whole structure's energy, forces and stress, with memory bounded by the largest subgraph.

Edges follow eqcalc's convention: ``edge_index[0]`` is the atom receiving the message (the
centre i), ``edge_index[1]`` the neighbour j, and an atom's periodic images are the atom itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Chunk:
    """One piece of a structure.

    Attributes:
        atoms: (M,) global indices of the subgraph's atoms, owned atoms first.
        num_owned: how many leading entries of ``atoms`` are owned (their energies count).
        edges: (E_c,) indices into the structure's edge list of the subgraph's edges.
        edge_index: (2, E_c) the same edges in subgraph (local) atom numbering.
    """

    atoms: np.ndarray
    num_owned: int
    edges: np.ndarray
    edge_index: np.ndarray


def halo_chunk(owned: np.ndarray, edge_index: np.ndarray, num_atoms: int, hops: int) -> Chunk:
    """The exact subgraph for the atoms ``owned`` (global indices) of a ``hops``-round model."""
    is_owned = np.zeros(num_atoms, dtype=bool)
    is_owned[owned] = True
    inside = is_owned.copy()  # grows to the atoms within hops of the owned ones
    receiving = np.zeros(num_atoms, dtype=bool)  # within hops−1: their incoming edges are needed
    for _ in range(hops):
        receiving = inside.copy()
        inside[edge_index[1, inside[edge_index[0]]]] = True
    edges = np.flatnonzero(receiving[edge_index[0]])
    halo = np.flatnonzero(inside & ~is_owned)
    atoms = np.concatenate([owned, halo])
    local = np.full(num_atoms, -1, dtype=np.int64)
    local[atoms] = np.arange(len(atoms))
    return Chunk(atoms=atoms, num_owned=len(owned), edges=edges, edge_index=local[edge_index[:, edges]])


def spatial_groups(positions: np.ndarray, blocks_per_axis: int) -> list[np.ndarray]:
    """Atom indices grouped into a blocks_per_axis³ grid over the bounding box (non-empty groups).

    Args:
        positions: (N, 3) Å; wrap periodic structures first so the groups are compact.
    """
    low, high = positions.min(axis=0), positions.max(axis=0)
    scaled = (positions - low) / np.maximum(high - low, 1e-9)
    cell = np.minimum((scaled * blocks_per_axis).astype(np.int64), blocks_per_axis - 1)
    label = (cell[:, 0] * blocks_per_axis + cell[:, 1]) * blocks_per_axis + cell[:, 2]
    order = np.argsort(label, kind="stable")
    boundaries = np.flatnonzero(np.diff(label[order])) + 1
    return np.split(order, boundaries)


def plan_chunks(positions: np.ndarray, edge_index: np.ndarray, hops: int, max_edges: int) -> list[Chunk]:
    """Chunks whose subgraphs hold at most ``max_edges`` edges each, covering every atom once.

    The grid is refined until every subgraph fits.

    Raises:
        ValueError: when even a single atom's subgraph has more than ``max_edges`` edges.
    """
    num_atoms = len(positions)
    blocks = max(1, int(np.ceil(np.cbrt(edge_index.shape[1] / max_edges))))
    while True:
        chunks = [halo_chunk(group, edge_index, num_atoms, hops) for group in spatial_groups(positions, blocks)]
        largest = max(len(c.edges) for c in chunks)
        if largest <= max_edges:
            return chunks
        if all(c.num_owned == 1 for c in chunks if len(c.edges) > max_edges):
            raise ValueError(
                f"A single atom's {hops}-hop neighbourhood already has {largest} edges, more than max_edges="
                f"{max_edges}: raise max_edges (it bounds the memory of one model evaluation)."
            )
        blocks += max(1, blocks // 2)
