"""SchNet: invariant message passing on distances (Schütt et al. 2017; seed 000 §4)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..nn import GaussianBasis, ShiftedSoftplus, build_cutoff, mlp, scatter_sum
from .base import AtomisticModel
from .registry import register_family


class ContinuousFilterInteraction(nn.Module):
    """Δh_i = g(Σ_j W h_j ⊙ w(d_ij) f_c(d_ij) / ⟨n⟩): a continuous-filter convolution."""

    def __init__(self, num_features: int, num_basis: int):
        super().__init__()
        self.filter = mlp([num_basis, num_features, num_features], ShiftedSoftplus)
        self.project_in = nn.Linear(num_features, num_features, bias=False)
        self.project_out = mlp([num_features, num_features, num_features], ShiftedSoftplus)

    def forward(
        self,
        features: torch.Tensor,
        radial: torch.Tensor,
        envelope: torch.Tensor,
        edge_index: torch.Tensor,
        avg_num_neighbors: float,
    ) -> torch.Tensor:
        """features (N, F), radial (E, K), envelope (E,) -> update (N, F)."""
        weights = self.filter(radial) * envelope[:, None]
        messages = self.project_in(features)[edge_index[1]] * weights
        aggregated = scatter_sum(messages, edge_index[0], features.shape[0]) / avg_num_neighbors
        return self.project_out(aggregated)


@register_family("schnet")
class SchNet(AtomisticModel):
    """SchNet with a smooth cutoff envelope.

    Args:
        num_features: width F of the atom features.
        num_interactions: number of continuous-filter interaction blocks.
        num_basis: number of Gaussians in the distance expansion.
        cutoff_fn: "cosine" (default) or "polynomial" (NequIP's p = 6 envelope).
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_features: int = 64,
        num_interactions: int = 3,
        num_basis: int = 32,
        cutoff_fn: str = "cosine",
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        self.num_features = int(num_features)
        self.num_interactions = int(num_interactions)
        self.num_basis = int(num_basis)
        self.cutoff_fn = cutoff_fn
        self.embedding = nn.Embedding(self.num_species, self.num_features)
        self.radial = GaussianBasis(self.cutoff, self.num_basis)
        self.envelope = build_cutoff(cutoff_fn, self.cutoff)
        self.interactions = nn.ModuleList(
            ContinuousFilterInteraction(self.num_features, self.num_basis) for _ in range(self.num_interactions)
        )
        self.readout = mlp([self.num_features, self.num_features // 2, 1], ShiftedSoftplus)

    @property
    def message_passing_hops(self) -> int:
        return self.num_interactions

    def readout_layers(self) -> list[nn.Module]:
        return [self.readout[-1]]

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        radial = self.radial(distances)
        envelope = self.envelope(distances)
        features = self.embedding(species)
        for interaction in self.interactions:
            (features,) = self.ghost_exchange(features)
            features = features + interaction(features, radial, envelope, edge_index, self.avg_num_neighbors)
        return self.readout(features).squeeze(-1)
