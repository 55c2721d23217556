"""Edges regrouped per centre atom into a dense (N, D) table of neighbour slots.

With every atom's edges in one row (padded to the largest degree D), a sum
over neighbours of a product becomes a batched matmul over the slot axis,
instead of materialising a large per-edge tensor and scattering it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NeighbourSlots:
    """Row n lists the edges of centre atom n, padded to ``width`` slots.

    Attributes:
        edge_of_slot: (N·D,) int64 edge index of each slot, E (one past the last edge) for padding.
        neighbour_of_slot: (N·D,) int64 neighbour atom j of each slot, 0 for padding.
        num_nodes: N.
        width: D = the largest number of edges of one atom (at least 1).
    """

    edge_of_slot: torch.Tensor
    neighbour_of_slot: torch.Tensor
    num_nodes: int
    width: int

    @classmethod
    @torch.compiler.disable  # data-dependent width: built eagerly, outside any compiled graph
    def from_edges(cls, edge_index: torch.Tensor, num_nodes: int) -> "NeighbourSlots":
        """edge_index (2, E) [centre i, neighbour j], any order."""
        centres, neighbours = edge_index[0], edge_index[1]
        num_edges = centres.shape[0]
        degree = torch.bincount(centres, minlength=num_nodes)
        width = max(int(degree.max()), 1) if num_edges else 1
        order = torch.argsort(centres, stable=True)
        first = torch.cumsum(degree, 0) - degree  # first sorted position of each centre's edges
        sorted_centres = centres[order]
        slots = sorted_centres * width + torch.arange(num_edges, device=centres.device) - first[sorted_centres]
        edge_of_slot = torch.full((num_nodes * width,), num_edges, dtype=torch.int64, device=centres.device)
        edge_of_slot[slots] = order
        neighbour_of_slot = torch.zeros_like(edge_of_slot)
        neighbour_of_slot[slots] = neighbours[order]
        return cls(edge_of_slot, neighbour_of_slot, num_nodes, width)

    def pad(self, edge_values: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Per-edge values (E, ...) -> per-slot values (N·D, ...), ``fill`` (broadcast to one row) in padding."""
        rows = torch.cat([edge_values, fill.expand((1,) + edge_values.shape[1:]).to(edge_values)])
        return rows.index_select(0, self.edge_of_slot)

    def rows(self, start: int, stop: int) -> "NeighbourSlots":
        """Centre atoms start…stop−1 only (their slots are rows start·D … stop·D − 1 of every
        per-slot tensor); neighbour indices still refer to all N atoms."""
        window = slice(start * self.width, stop * self.width)
        return NeighbourSlots(self.edge_of_slot[window], self.neighbour_of_slot[window], stop - start, self.width)
