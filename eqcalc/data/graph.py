"""Atomic structures as graphs: edges (i, j, image shift) within a cutoff, batched."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from ase import Atoms

from .neighbors import neighbour_list
from .validation import check_positions


def stress_defined(cell: np.ndarray, pbc: np.ndarray) -> bool:
    """Stress is defined for a structure with a periodic direction and a cell of non-zero volume."""
    return bool(np.any(pbc)) and abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64)))) > 1e-12


@dataclass
class AtomicGraph:
    """One structure or a batch of structures as a single disconnected graph.

    Attributes:
        positions: (N, 3) float64, Å.
        numbers: (N,) int64 atomic numbers.
        cell: (B, 3, 3) float64 lattice vectors as rows, Å (zeros for a molecule).
        pbc: (B, 3) bool.
        edge_index: (2, E) int64, row 0 centre atom i, row 1 neighbour j (global indices).
        shifts: (E, 3) float64 integer image shifts of j, in cell vectors.
        batch: (N,) int64 structure index of each atom.
        num_graphs: B.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def to(self, device: str | torch.device) -> "AtomicGraph":
        """Copy of the graph with every tensor on ``device``."""
        moved = {
            f.name: (getattr(self, f.name).to(device) if torch.is_tensor(getattr(self, f.name)) else getattr(self, f.name))
            for f in fields(self)
        }
        return AtomicGraph(**moved)


def structure_graph(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    edge_index: np.ndarray,
    shifts: np.ndarray,
) -> AtomicGraph:
    """Wrap one structure's arrays (as :func:`neighbour_list` returns them) in a graph."""
    return AtomicGraph(
        positions=torch.as_tensor(np.asarray(positions, dtype=np.float64)),
        numbers=torch.as_tensor(np.asarray(numbers, dtype=np.int64)),
        cell=torch.as_tensor(np.asarray(cell, dtype=np.float64).reshape(1, 3, 3)),
        pbc=torch.as_tensor(np.asarray(pbc, dtype=bool).reshape(1, 3)),
        edge_index=torch.as_tensor(edge_index),
        shifts=torch.as_tensor(shifts, dtype=torch.float64),
        batch=torch.zeros(len(numbers), dtype=torch.int64),
        num_graphs=1,
    )


def atoms_to_graph(atoms: Atoms, cutoff: float) -> AtomicGraph:
    """Graph of ``atoms`` with every pair closer than ``cutoff`` Å (all periodic images)."""
    positions = atoms.get_positions()
    cell = atoms.cell.array
    check_positions(positions, cell)
    edge_index, shifts = neighbour_list(positions, cell, atoms.pbc, cutoff)
    return structure_graph(positions, atoms.numbers, cell, atoms.pbc, edge_index, shifts)


def batch_graphs(graphs: list[AtomicGraph]) -> AtomicGraph:
    """Concatenate graphs into one: atom indices offset, structure index per atom."""
    offsets = np.cumsum([0] + [g.num_atoms for g in graphs[:-1]])
    batch_offsets = np.cumsum([0] + [g.num_graphs for g in graphs[:-1]])
    return AtomicGraph(
        positions=torch.cat([g.positions for g in graphs]),
        numbers=torch.cat([g.numbers for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        pbc=torch.cat([g.pbc for g in graphs]),
        edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets)], dim=1),
        shifts=torch.cat([g.shifts for g in graphs]),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, batch_offsets)]),
        num_graphs=sum(g.num_graphs for g in graphs),
    )
