"""Edges regrouped per centre atom into a dense (N, D) table of neighbour slots.

With every atom's edges in one row (padded to the largest degree D), a sum
over neighbours of a product becomes a batched matmul over the slot axis,
instead of materialising a large per-edge tensor and scattering it.

A full neighbour list holds every pair twice, i → j and j → i, at the same
distance. Functions of the distance alone (radial MLPs) are evaluated once per
pair and read from there by both slots (:attr:`NeighbourSlots.pair_of_slot`):
half the rows of the edges, and without the padding slots.
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
        num_neighbours: (N,) int64 edges of each atom: its slots are the first num_neighbours of its
            row, the rest are padding.
        edge_of_pair: (P,) int64 the first edge (in input order) of each pair {i → j, j → i}:
            its vector gives the pair's distance and receives the whole gradient of functions
            of it. None: the edges were not given as such pairs (then they are evaluated per slot).
        pair_of_slot: (N·D,) int64 pair of each slot, P (one past the last pair) for padding;
            None without pairs.
        slots_of_pair: (P, 2) int64 the two slots of each pair; None without pairs.
    """

    edge_of_slot: torch.Tensor
    neighbour_of_slot: torch.Tensor
    num_nodes: int
    width: int
    num_neighbours: torch.Tensor
    edge_of_pair: torch.Tensor | None = None
    pair_of_slot: torch.Tensor | None = None
    slots_of_pair: torch.Tensor | None = None

    @classmethod
    @torch.compiler.disable  # data-dependent width: built eagerly, outside any compiled graph
    def from_edges(
        cls, edge_index: torch.Tensor, num_nodes: int, edge_vectors: torch.Tensor | None = None
    ) -> "NeighbourSlots":
        """edge_index (2, E) [centre i, neighbour j], any order. With ``edge_vectors`` (E, 3) Å
        (read only to check the pairing, detached), edges are also grouped in reverse pairs
        (:func:`reverse_pairs`) where they form them."""
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
        edges_of_pair = None if edge_vectors is None else reverse_pairs(edge_index, edge_vectors.detach())
        if edges_of_pair is None:
            return cls(edge_of_slot, neighbour_of_slot, num_nodes, width, degree)
        num_pairs = edges_of_pair.shape[0]
        pair_of_edge = torch.full((num_edges + 1,), num_pairs, dtype=torch.int64, device=centres.device)
        pair_of_edge[edges_of_pair] = torch.arange(num_pairs, device=centres.device)[:, None]  # edge E: padding
        slot_of_edge = torch.empty_like(order)
        slot_of_edge[order] = slots
        return cls(
            edge_of_slot, neighbour_of_slot, num_nodes, width, degree,
            edges_of_pair[:, 0], pair_of_edge.index_select(0, edge_of_slot), slot_of_edge[edges_of_pair],
        )

    @property
    def paired(self) -> bool:
        """Whether functions of the distance are evaluated once per pair (:attr:`pair_of_slot`)."""
        return self.pair_of_slot is not None

    def from_pairs(self, pair_values: torch.Tensor) -> torch.Tensor:
        """Values per pair and a padding row, (P + 1, C), -> per slot (N·D, C)."""
        return PairsToSlots.apply(pair_values, self.pair_of_slot, self.slots_of_pair)

    def pad(self, edge_values: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Per-edge values (E, ...) -> per-slot values (N·D, ...), ``fill`` (broadcast to one row) in padding."""
        rows = torch.cat([edge_values, fill.expand((1,) + edge_values.shape[1:]).to(edge_values)])
        return rows.index_select(0, self.edge_of_slot)

    def rows(self, start: int, stop: int) -> "NeighbourSlots":
        """Centre atoms start…stop−1 only (their slots are rows start·D … stop·D − 1 of every
        per-slot tensor), unpaired: per-edge values come per slot; neighbour indices still
        refer to all N atoms."""
        window = slice(start * self.width, stop * self.width)
        return NeighbourSlots(
            self.edge_of_slot[window], self.neighbour_of_slot[window], stop - start, self.width,
            self.num_neighbours[start:stop],
        )


class PairsToSlots(torch.autograd.Function):
    """slot_values = pair_values[pair_of_slot], with the backward as a gather too.

    Every pair is read by exactly two slots, so the gradient of a pair is the sum of its two
    slots' gradients: two gathers instead of the scatter-add of ``index_select``'s backward
    (which ``torch.compile`` makes atomic adds on CPU). Written with differentiable
    operations, so a loss on forces can differentiate through it again.

    The padding row (index P) gets a zero gradient. Exact for both uses, the radial basis and
    the radial weights: for the padding vector (length 2 r_c, past the envelope) the basis is
    zero and the bias-free radial MLP of it too, so no parameter or input has a gradient
    through that row anyway.
    """

    @staticmethod
    def forward(ctx, pair_values: torch.Tensor, pair_of_slot: torch.Tensor, slots_of_pair: torch.Tensor):
        """pair_values (P + 1, C), pair_of_slot (S,), slots_of_pair (P, 2) -> (S, C)."""
        ctx.save_for_backward(slots_of_pair)
        return pair_values.index_select(0, pair_of_slot)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        """grad (S, C) -> (P + 1, C) for pair_values, none for the indices."""
        (slots_of_pair,) = ctx.saved_tensors
        grad_pairs = grad.index_select(0, slots_of_pair[:, 0]) + grad.index_select(0, slots_of_pair[:, 1])
        return torch.cat([grad_pairs, grad.new_zeros((1,) + grad.shape[1:])]), None, None


def reverse_pairs(edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor | None:
    """Group the edges as pairs {i → j, j → i} with opposite vectors, as a full neighbour list has them.

    Edges are grouped by their atom pair {i, j}. Where every group is exactly one edge i → j
    and one j → i (i ≠ j) whose vectors (E, 3) Å add up to zero (to 64 ulp of the larger
    component), those two are an edge and its reverse at the same distance (their image
    shifts are opposite). Lists where that fails return None: an atom's own periodic images
    (i = j), several images of one neighbour within the cutoff (cells shorter than 2 r_c in
    some direction), one-sided lists (the pieces of chunked evaluation), non-finite vectors.

    Returns:
        edges_of_pair (P, 2) int64, P = E / 2: the two edges of each pair, the one first in
        the input order in column 0. None: not such pairs.
    """
    centres, neighbours = edge_index[0], edge_index[1]
    num_edges = centres.shape[0]
    if num_edges == 0 or num_edges % 2:
        return None
    low, high = torch.minimum(centres, neighbours), torch.maximum(centres, neighbours)
    key = low * (int(high.max()) + 1) + high
    order = torch.argsort(key, stable=True)
    first, second = order[0::2], order[1::2]
    mismatch = (edge_vectors[first] + edge_vectors[second]).abs().amax(dim=1)
    tolerance = 64 * torch.finfo(edge_vectors.dtype).eps * (1.0 + edge_vectors[first].abs().amax(dim=1))
    paired = (
        (centres != neighbours).all()  # no own images
        & (key[first] == key[second]).all()
        & (key[second[:-1]] != key[first[1:]]).all()  # no group of more than two edges
        & (centres[first] != centres[second]).all()  # one edge each way
        & (mismatch <= tolerance).all()  # opposite vectors (False for NaN)
    )
    if not bool(paired):  # one host sync
        return None
    return torch.stack([first, second], dim=1)
