"""A torch Dataset of (graph, labels) pairs with neighbour lists built once."""

from __future__ import annotations

import torch
from ase import Atoms
from torch.utils.data import Dataset

from .graph import AtomicGraph, atoms_to_graph
from .labels import Labels
from .structures import LabelledStructure


def structure_to_graph(structure: LabelledStructure, cutoff: float) -> AtomicGraph:
    """Graph of one structure with every pair closer than ``cutoff`` Å."""
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    return atoms_to_graph(atoms, cutoff)


class GraphDataset(Dataset):
    """Structures as graphs within ``cutoff`` Å, each paired with its :class:`Labels`.

    Use with ``DataLoader(..., collate_fn=eqcalc.data.labels.collate)``.
    """

    def __init__(self, structures: list[LabelledStructure], cutoff: float):
        self.structures = list(structures)
        self.cutoff = float(cutoff)
        self.graphs = [structure_to_graph(s, cutoff) for s in self.structures]
        self.labels = [Labels.of(s) for s in self.structures]

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index: int) -> tuple[AtomicGraph, Labels]:
        return self.graphs[index], self.labels[index]

    def average_num_neighbors(self) -> float:
        """Mean number of neighbours within the cutoff per atom."""
        edges = sum(g.num_edges for g in self.graphs)
        atoms = sum(g.num_atoms for g in self.graphs)
        return edges / max(atoms, 1)

    def species(self) -> list[int]:
        """Sorted atomic numbers present."""
        return sorted(torch.unique(torch.cat([g.numbers for g in self.graphs])).tolist())
