"""A torch Dataset of (graph, labels) pairs with neighbour lists built once."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from torch.utils.data import Dataset

from .graph import AtomicGraph, atoms_to_graph
from .labelled import LabelledStructure
from .labels import Labels
from .validation import check_min_distance


def structure_to_graph(structure: LabelledStructure, cutoff: float) -> AtomicGraph:
    """Graph of one structure with every pair closer than ``cutoff`` Å; overlapping atoms are an error."""
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    graph = atoms_to_graph(atoms, cutoff)
    i, j = graph.edge_index.numpy()
    vectors = structure.positions[j] - structure.positions[i] + graph.shifts.numpy() @ structure.cell
    check_min_distance(graph.edge_index.numpy(), np.linalg.norm(vectors, axis=1))
    return graph


class GraphDataset(Dataset):
    """Structures as graphs within ``cutoff`` Å, each paired with its :class:`Labels`.

    Use with ``DataLoader(..., collate_fn=eqcalc.data.labels.collate)``.
    ``source`` names the data in error messages.
    """

    def __init__(self, structures: list[LabelledStructure], cutoff: float, source: str = "data"):
        self.structures = list(structures)
        self.cutoff = float(cutoff)
        self.graphs = []
        for k, structure in enumerate(self.structures):
            try:
                self.graphs.append(structure_to_graph(structure, cutoff))
            except ValueError as err:
                raise ValueError(f"{source}, structure {k}: {err}") from None
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
