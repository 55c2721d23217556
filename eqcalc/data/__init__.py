"""Structures to graphs: neighbour lists, batching and input checks."""

from .graph import AtomicGraph, atoms_to_graph, batch_graphs, structure_graph
from .neighbors import neighbour_list
from .validation import MIN_DISTANCE, check_min_distance, check_positions, check_species

__all__ = [
    "MIN_DISTANCE",
    "AtomicGraph",
    "atoms_to_graph",
    "batch_graphs",
    "check_min_distance",
    "check_positions",
    "check_species",
    "neighbour_list",
    "structure_graph",
]
