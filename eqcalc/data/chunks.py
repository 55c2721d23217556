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

    def within(self, keep: np.ndarray) -> "Chunk":
        """The same piece with only the edges whose entry in ``keep`` (a mask over the structure's
        edge list) is True: a plan made on a Verlet skin list, restricted to the edges inside the
        cutoff now. The halo stays exact because the skin graph contains the cutoff graph."""
        mask = keep[self.edges]
        return Chunk(self.atoms, self.num_owned, self.edges[mask], self.edge_index[:, mask])


class IncomingEdges:
    """The edge list sorted by receiving atom, so the edges ending on a set of atoms are found in
    time proportional to their number (compressed sparse rows).

    Args:
        edge_index: (2, E) receiver, neighbour.
        num_atoms: N.
    """

    def __init__(self, edge_index: np.ndarray, num_atoms: int):
        self.edge_index = edge_index
        self.num_atoms = num_atoms
        self.order = np.argsort(edge_index[0], kind="stable")
        self.start = np.zeros(num_atoms + 1, dtype=np.int64)
        np.cumsum(np.bincount(edge_index[0], minlength=num_atoms), out=self.start[1:])

    def of(self, atoms: np.ndarray) -> np.ndarray:
        """(E_a,) indices into the edge list of every edge received by ``atoms`` (distinct atoms)."""
        counts = self.start[atoms + 1] - self.start[atoms]
        total = int(counts.sum())
        first = np.repeat(self.start[atoms] - np.cumsum(counts) + counts, counts)
        return self.order[first + np.arange(total)]


def halo_chunk(owned: np.ndarray, incoming: IncomingEdges, hops: int) -> Chunk:
    """The exact subgraph for the atoms ``owned`` (global indices) of a ``hops``-round model,
    found by a breadth-first search over ``hops`` rounds (cost ∝ the subgraph's edges)."""
    inside = np.zeros(incoming.num_atoms, dtype=bool)
    inside[owned] = True
    frontier, halo, edges = owned, [], []
    for _ in range(hops):  # the frontier is within hops−1 of the owned atoms: its incoming edges count
        received = incoming.of(frontier)
        edges.append(received)
        senders = np.unique(incoming.edge_index[1, received])
        frontier = senders[~inside[senders]]
        inside[frontier] = True
        halo.append(frontier)
    atoms = np.concatenate([owned, *halo])
    edges = np.sort(np.concatenate(edges)) if edges else np.zeros(0, dtype=np.int64)
    local = np.full(incoming.num_atoms, -1, dtype=np.int64)
    local[atoms] = np.arange(len(atoms))
    return Chunk(atoms=atoms, num_owned=len(owned), edges=edges, edge_index=local[incoming.edge_index[:, edges]])


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


def slot_width(edge_index: np.ndarray, num_atoms: int) -> int:
    """The most edges one atom receives (≥ 1): the row width of the per-atom neighbour-slot table
    (:class:`eqcalc.nn.neighbour_slots.NeighbourSlots`) a model builds from ``edge_index``."""
    return max(int(np.bincount(edge_index[0], minlength=num_atoms).max(initial=0)), 1)


@dataclass(frozen=True)
class ChunkCost:
    """What evaluating a subgraph costs: ``fixed + per_atom·atoms + per_edge·edges``. The default
    counts edges (a ``max_edges`` limit); the calculator's measured memory model gives bytes."""

    per_atom: float = 0.0
    per_edge: float = 1.0
    fixed: float = 0.0

    def of(self, atoms: int, edges: int) -> float:
        return self.fixed + self.per_atom * atoms + self.per_edge * edges


def plan_chunks(
    positions: np.ndarray, edge_index: np.ndarray, hops: int, limit: float, cost: ChunkCost = ChunkCost()
) -> list[Chunk]:
    """Chunks whose subgraphs cost at most ``limit`` each (by default: hold at most ``limit``
    edges), covering every atom once. The grid is refined until every subgraph fits.

    Raises:
        ValueError: when even a single atom's subgraph costs more than ``limit``.
    """
    incoming = IncomingEdges(edge_index, len(positions))

    def too_big(chunks: list[Chunk]) -> list[Chunk]:
        return [c for c in chunks if cost.of(len(c.atoms), len(c.edges)) > limit]

    def fail(chunks: list[Chunk]) -> ValueError:
        worst = max(chunks, key=lambda c: cost.of(len(c.atoms), len(c.edges)))
        return ValueError(
            f"A single atom's {hops}-hop neighbourhood ({len(worst.atoms)} atoms, {len(worst.edges)} edges) "
            f"already exceeds the limit of one evaluation ({limit:.4g}{'' if cost == ChunkCost() else ' bytes'}): "
            "raise max_edges (it bounds the memory of one model evaluation)."
        )

    busiest = np.bincount(edge_index[0], minlength=len(positions)).argmax() if edge_index.size else 0
    if failed := too_big([halo_chunk(np.array([busiest]), incoming, hops)]):  # fail fast, before refining
        raise fail(failed)
    blocks = max(1, int(np.ceil(np.cbrt(cost.of(len(positions), edge_index.shape[1]) / limit))))
    while True:
        chunks = [halo_chunk(group, incoming, hops) for group in spatial_groups(positions, blocks)]
        failed = too_big(chunks)
        if not failed:
            return chunks
        if all(c.num_owned == 1 for c in failed):
            raise fail(failed)
        blocks += max(1, blocks // 2)
