"""EGNN: E(n)-equivariant graph network (Satorras, Hoogeboom & Welling 2021; seed 000 §5).

Every atom carries features h_i (N, F) and a position that the layers move. A layer

    m_ij  = φ_e(h_i, h_j, ‖x_i − x_j‖² / r_c², rbf(d⁰_ij))
    x'_i  = x_i + Σ_j (x_i − x_j) tanh(φ_x(m_ij)) f_c(d⁰_ij) / ⟨n⟩
    h'_i  = h_i + φ_h(h_i, Σ_j m_ij f_c(d⁰_ij) / ⟨n⟩)

where d⁰_ij is the *input* distance: it decides which edges exist, so weighting
every edge term by the envelope f_c(d⁰_ij) keeps the energy smooth as atoms cross
r_c. The energy is read from the final h.

Periodic structures: the moved positions are tracked as per-atom displacements
Δ_i = x'_i − x_i, and a later layer sees the edge vector

    edge_vector_ij + Δ_j − Δ_i  =  (x'_j + shift) − x'_i,

which is translation invariant and identical for every periodic image of an atom.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..nn import GaussianBasis, build_cutoff, mlp, scatter_sum
from .base import AtomisticModel
from .heads import AtomFeatures
from .registry import register_family


class EGNNLayer(nn.Module):
    """One EGNN layer; ``update_positions=False`` for the last one, whose moves no later layer reads."""

    def __init__(self, num_features: int, num_basis: int, update_positions: bool):
        super().__init__()
        self.edge_model = nn.Sequential(mlp([2 * num_features + 1 + num_basis, num_features, num_features]), nn.SiLU())
        self.node_model = mlp([2 * num_features, num_features, num_features])
        self.position_model = mlp([num_features, num_features, 1]) if update_positions else None

    def forward(
        self,
        features: torch.Tensor,
        relative: torch.Tensor,
        radial: torch.Tensor,
        envelope: torch.Tensor,
        edge_index: torch.Tensor,
        cutoff: float,
        avg_num_neighbors: float,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features (N, F); relative (E, 3) x'_j − x'_i, Å; radial (E, K); envelope (E,)
        -> (updated features (N, F), position moves (N, 3) Å or None)."""
        centre, neighbour = edge_index
        squared = relative.square().sum(dim=-1, keepdim=True) / cutoff**2
        messages = self.edge_model(torch.cat([features[centre], features[neighbour], squared, radial], dim=-1))
        num_atoms = features.shape[0]
        aggregated = scatter_sum(messages * envelope[:, None], centre, num_atoms) / avg_num_neighbors
        features = features + self.node_model(torch.cat([features, aggregated], dim=-1))
        if self.position_model is None:
            return features, None
        weights = torch.tanh(self.position_model(messages)) * envelope[:, None]
        moves = scatter_sum(-relative * weights, centre, num_atoms) / avg_num_neighbors
        return features, moves


@register_family("egnn")
class EGNN(AtomisticModel):
    """EGNN energy model with a smooth cutoff envelope.

    Defaults: F = 128, 4 layers, 16 Gaussians of the input distance, cosine cutoff
    at r_c = 5 Å; with species [1, 6, 7, 8] that is 462,724 parameters.

    Args:
        num_features: width F of the atom features h.
        num_layers: number of EGNN layers (all but the last move the positions).
        num_basis: Gaussians of the input distance d⁰_ij fed to φ_e next to
            ‖x_i − x_j‖²; 0 uses the squared distance alone, as in the paper.
        cutoff_fn: "cosine" (default) or "polynomial" (NequIP's p = 6 envelope).
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_features: int = 128,
        num_layers: int = 4,
        num_basis: int = 16,
        cutoff_fn: str = "cosine",
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        if num_basis == 1 or num_basis < 0:
            raise ValueError(f"num_basis must be 0 (no radial basis) or at least 2, got {num_basis}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        self.num_features = int(num_features)
        self.num_layers = int(num_layers)
        self.num_basis = int(num_basis)
        self.cutoff_fn = cutoff_fn
        self.embedding = nn.Embedding(self.num_species, self.num_features)
        self.radial = GaussianBasis(self.cutoff, self.num_basis) if self.num_basis else None
        self.envelope = build_cutoff(cutoff_fn, self.cutoff)
        self.layers = nn.ModuleList(
            EGNNLayer(self.num_features, self.num_basis, update_positions=k < self.num_layers - 1)
            for k in range(self.num_layers)
        )
        self.readout = mlp([self.num_features, self.num_features // 2, 1])

    def propagate(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final features h (N, F) and total position displacements Δ (N, 3) in Å.

        Arguments as in :meth:`atomic_outputs`; x_i + Δ_i are the positions the last layer saw.
        """
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        envelope = self.envelope(distances)
        radial = self.radial(distances) if self.radial is not None else edge_vectors.new_zeros((len(distances), 0))
        features = self.embedding(species)
        displacements = edge_vectors.new_zeros((features.shape[0], 3))
        centre, neighbour = edge_index
        for layer in self.layers:
            features, displacements = self.ghost_exchange(features, displacements)
            relative = edge_vectors + displacements[neighbour] - displacements[centre]
            features, moves = layer(
                features, relative, radial, envelope, edge_index, self.cutoff, self.avg_num_neighbors
            )
            if moves is not None:
                displacements = displacements + moves
        return features, displacements

    @property
    def message_passing_hops(self) -> int:
        return self.num_layers

    def readout_layers(self) -> list[nn.Module]:
        return [self.readout[-1]]

    @property
    def feature_sizes(self) -> tuple[int, int]:
        """The features h and one vector, the total displacement Δ (only when a layer moves the atoms)."""
        if self.num_layers < 2:
            raise self._without_vector_features()
        return self.num_features, 1

    def atomic_features(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        features, displacements = self.propagate(species, edge_index, edge_vectors)
        return self.readout(features).squeeze(-1), AtomFeatures(features, displacements[:, :, None])

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        return self.atomic_features(species, edge_index, edge_vectors, batch, num_graphs, tables)[0]
