"""NequIP: E(3)-equivariant message passing on O(3) irreps (Batzner et al. 2022).

Node features are irreps up to ``lmax``. Each layer convolves them with the
spherical harmonics of the edges through Clebsch–Gordan tensor products whose
weights are radial functions of the distance, then applies a gated
nonlinearity. The per-atom energy is a linear readout of the final scalars.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.irreps import (
    EdgeEmbedding,
    EquivariantConvolution,
    feature_irreps,
    gated_nonlinearity,
    irrep_channels,
    irrep_multiplicity,
    reachable,
)
from ..nn.neighbour_slots import NeighbourSlots
from .base import AtomisticModel
from .heads import AtomFeatures
from .registry import register_family


class NequIPLayer(nn.Module):
    """h' = Gate(convolution(h)) (+ h when the irreps agree).

    The layer's output irreps (``irreps_out``) are the entries of ``target``
    that the tensor product irreps_in ⊗ irreps_sh can reach.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        target: o3.Irreps,
        num_basis: int,
        radial_hidden: int,
        radial_layers: int,
    ):
        super().__init__()
        self.gate = gated_nonlinearity(reachable(target, irreps_in, irreps_sh))
        self.irreps_out = self.gate.irreps_out
        self.convolution = EquivariantConvolution(
            irreps_in, irreps_sh, self.gate.irreps_in, num_basis, radial_hidden, radial_layers
        )
        self.residual = self.irreps_out == o3.Irreps(irreps_in)

    def forward(self, features, sh, radial, distances, slots, avg_num_neighbors: float) -> torch.Tensor:
        """features (N, irreps_in.dim) -> (N, irreps_out.dim)."""
        update = self.gate(self.convolution(features, sh, radial, distances, slots, avg_num_neighbors))
        return features + update if self.residual else update


@register_family("nequip")
class NequIP(AtomisticModel):
    """NequIP with Bessel × polynomial (p = 6) radial basis.

    Args:
        num_features: multiplicity of every irrep in the hidden features.
        lmax: largest l of the features and of the edge spherical harmonics (0–3).
        parity: keep both parities of every l (full O(3) features, pseudoscalars
            and pseudovectors included); False keeps only p = (−1)^l.
        num_layers: number of interaction layers.
        num_basis: number of Bessel functions.
        radial_hidden, radial_layers: width and depth of each layer's radial MLP.
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_features: int = 32,
        lmax: int = 1,
        parity: bool = True,
        num_layers: int = 4,
        num_basis: int = 8,
        radial_hidden: int = 64,
        radial_layers: int = 2,
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        if not 0 <= int(lmax) <= 3:
            raise ValueError(f"nequip supports lmax = 0…3, got {lmax}.")
        if int(num_layers) < 1:
            raise ValueError(f"nequip needs num_layers ≥ 1, got {num_layers}.")
        self.num_features = int(num_features)
        self.lmax = int(lmax)
        self.parity = bool(parity)
        self.num_layers = int(num_layers)
        self.num_basis = int(num_basis)
        self.radial_hidden = int(radial_hidden)
        self.radial_layers = int(radial_layers)

        self.embedding = nn.Embedding(self.num_species, self.num_features)
        self.edge_embedding = EdgeEmbedding(self.cutoff, self.lmax, self.num_basis)
        target = feature_irreps(self.num_features, self.lmax, self.parity)
        irreps = o3.Irreps(f"{self.num_features}x0e")
        layers = []
        for _ in range(self.num_layers):
            layer = NequIPLayer(
                irreps, self.edge_embedding.irreps_sh, target, self.num_basis, self.radial_hidden, self.radial_layers
            )
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = o3.Linear(irreps, "1x0e")

    @property
    def feature_irreps(self) -> list[o3.Irreps]:
        """Irreps of the node features after each layer (see :meth:`node_features`)."""
        return [layer.irreps_out for layer in self.layers]

    def index_tables(self, species, edge_index, edge_vectors) -> NeighbourSlots:
        return NeighbourSlots.from_edges(edge_index, species.shape[0], edge_vectors)

    def node_features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        tables: NeighbourSlots | None = None,
    ) -> list[torch.Tensor]:
        """Node features after each layer: list of (N, feature_irreps[t].dim) tensors.

        Arguments as for :meth:`atomic_outputs`.
        """
        slots = self.index_tables(species, edge_index, edge_vectors) if tables is None else tables
        radial, sh, distances = self.edge_embedding(edge_vectors, slots)
        features = self.embedding(species)
        outputs = []
        for layer in self.layers:
            (features,) = self.ghost_exchange(features)
            features = layer(features, sh, radial, distances, slots, self.avg_num_neighbors)
            outputs.append(features)
        return outputs

    @property
    def message_passing_hops(self) -> int:
        return self.num_layers

    def readout_layers(self) -> list[nn.Module]:
        return [self.readout]

    @property
    def feature_sizes(self) -> tuple[int, int]:
        """The 0e and 1o channels of the last layer (none of 1o with lmax 0)."""
        irreps = self.feature_irreps[-1]
        num_vectors = irrep_multiplicity(irreps, "1o")
        if not num_vectors:
            raise self._without_vector_features()
        return irrep_multiplicity(irreps, "0e"), num_vectors

    def atomic_features(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        features = self.node_features(species, edge_index, edge_vectors, tables)[-1]
        irreps = self.feature_irreps[-1]
        scalars, vectors = irrep_channels(features, irreps, "0e")[:, 0], irrep_channels(features, irreps, "1o")
        return self.readout(features).squeeze(-1), AtomFeatures(scalars, vectors)

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        return self.readout(self.node_features(species, edge_index, edge_vectors, tables)[-1]).squeeze(-1)
