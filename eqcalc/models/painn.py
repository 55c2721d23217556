"""PaiNN: polarizable atom interaction neural network (Schütt, Unke & Gastegger 2021).

Every atom carries scalar features s_i (N, F) and vector features v_i (N, 3, F),
the "scalar track / vector track" recipe: vectors are only mixed linearly across
channels, scaled by scalars and summed; every nonlinearity acts on invariants
(scalars, vector norms, dot products). The energy is read from the scalars.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..nn import BesselBasis, build_cutoff, mlp, scatter_sum
from .base import AtomisticModel
from .heads import AtomFeatures
from .registry import register_family

# Added under the square root of ‖V v‖² so the norm has a finite gradient at v = 0
# (isolated atoms, symmetric sites, the first layer); shifts a norm by < 1e-4.
NORM_EPS = 1e-8


class PaiNNMessage(nn.Module):
    """Neighbour messages gated by filters of the distance.

    φ(s_j) ∘ W(rbf(d_ij)) f_c(d_ij) is split into three gates (g_vv, g_s, g_vs):

        Δs_i = Σ_j g_s,                      Δv_i = Σ_j [v_j ∘ g_vv + r̂_ij ⊗ g_vs],

    both sums divided by ⟨n⟩. r̂_ij is the unit vector from i to j.
    """

    def __init__(self, num_features: int, num_basis: int):
        super().__init__()
        self.num_features = num_features
        self.context = mlp([num_features, num_features, 3 * num_features])
        self.filter = nn.Linear(num_basis, 3 * num_features)

    def forward(
        self,
        scalars: torch.Tensor,
        vectors: torch.Tensor,
        radial: torch.Tensor,
        envelope: torch.Tensor,
        unit_vectors: torch.Tensor,
        edge_index: torch.Tensor,
        avg_num_neighbors: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """scalars (N, F), vectors (N, 3, F), radial (E, K), envelope (E,), unit_vectors (E, 3)
        -> updates (N, F), (N, 3, F)."""
        centre, neighbour = edge_index
        gates = self.context(scalars)[neighbour] * self.filter(radial) * envelope[:, None]
        gate_vv, gate_s, gate_vs = torch.split(gates, self.num_features, dim=-1)
        vector_messages = vectors[neighbour] * gate_vv[:, None, :] + unit_vectors[:, :, None] * gate_vs[:, None, :]
        num_atoms = scalars.shape[0]
        delta_scalars = scatter_sum(gate_s, centre, num_atoms) / avg_num_neighbors
        delta_vectors = scatter_sum(vector_messages, centre, num_atoms) / avg_num_neighbors
        return delta_scalars, delta_vectors


class PaiNNUpdate(nn.Module):
    """Atom-wise exchange between the tracks.

    With U v, V v channel mixes of the vectors (no bias) and
    (a_vv, a_sv, a_ss) = MLP(s, ‖V v‖):

        Δv = a_vv ∘ (U v),          Δs = a_sv ∘ ⟨U v, V v⟩ + a_ss.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.mix_u = nn.Linear(num_features, num_features, bias=False)
        self.mix_v = nn.Linear(num_features, num_features, bias=False)
        self.gates = mlp([2 * num_features, num_features, 3 * num_features])

    def forward(self, scalars: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scalars (N, F), vectors (N, 3, F) -> updates (N, F), (N, 3, F)."""
        u_vectors = self.mix_u(vectors)
        v_vectors = self.mix_v(vectors)
        v_norms = torch.sqrt(v_vectors.square().sum(dim=1) + NORM_EPS)
        gates = self.gates(torch.cat([scalars, v_norms], dim=-1))
        a_vv, a_sv, a_ss = torch.split(gates, self.num_features, dim=-1)
        delta_vectors = a_vv[:, None, :] * u_vectors
        delta_scalars = a_sv * (u_vectors * v_vectors).sum(dim=1) + a_ss
        return delta_scalars, delta_vectors


@register_family("painn")
class PaiNN(AtomisticModel):
    """PaiNN with a smooth cutoff envelope on every filter.

    Defaults follow the paper (F = 128, 3 interaction blocks, 20 sine/Bessel radial
    functions sin(kπd/r_c)/d with fixed frequencies, cosine cutoff at r_c = 5 Å);
    with species [1, 6, 7, 8] that is 576,769 parameters.

    Args:
        num_features: channels F of the scalar and of the vector features.
        num_interactions: number of message + update blocks.
        num_basis: number of radial basis functions.
        cutoff_fn: "cosine" (default) or "polynomial" (NequIP's p = 6 envelope).
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_features: int = 128,
        num_interactions: int = 3,
        num_basis: int = 20,
        cutoff_fn: str = "cosine",
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        self.num_features = int(num_features)
        self.num_interactions = int(num_interactions)
        self.num_basis = int(num_basis)
        self.cutoff_fn = cutoff_fn
        self.embedding = nn.Embedding(self.num_species, self.num_features)
        self.radial = BesselBasis(self.cutoff, self.num_basis, trainable=False)
        self.envelope = build_cutoff(cutoff_fn, self.cutoff)
        self.messages = nn.ModuleList(
            PaiNNMessage(self.num_features, self.num_basis) for _ in range(self.num_interactions)
        )
        self.updates = nn.ModuleList(PaiNNUpdate(self.num_features) for _ in range(self.num_interactions))
        self.readout = mlp([self.num_features, self.num_features // 2, 1])

    def atom_features(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final scalar (N, F) and vector (N, 3, F) features; arguments as in :meth:`atomic_outputs`.

        The vectors are polar: they rotate with the structure and flip sign under inversion.
        """
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        unit_vectors = edge_vectors / distances[:, None]
        radial = self.radial(distances)
        envelope = self.envelope(distances)
        scalars = self.embedding(species)
        vectors = scalars.new_zeros((scalars.shape[0], 3, self.num_features))
        for message, update in zip(self.messages, self.updates):
            scalars, vectors = self.ghost_exchange(scalars, vectors)
            delta_s, delta_v = message(
                scalars, vectors, radial, envelope, unit_vectors, edge_index, self.avg_num_neighbors
            )
            scalars, vectors = scalars + delta_s, vectors + delta_v
            delta_s, delta_v = update(scalars, vectors)
            scalars, vectors = scalars + delta_s, vectors + delta_v
        return scalars, vectors

    @property
    def message_passing_hops(self) -> int:
        return self.num_interactions

    def readout_layers(self) -> list[nn.Module]:
        return [self.readout[-1]]

    @property
    def feature_sizes(self) -> tuple[int, int]:
        return self.num_features, self.num_features

    def atomic_features(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        scalars, vectors = self.atom_features(species, edge_index, edge_vectors)
        return self.readout(scalars).squeeze(-1), AtomFeatures(scalars, vectors)

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        return self.atomic_features(species, edge_index, edge_vectors, batch, num_graphs, tables)[0]
