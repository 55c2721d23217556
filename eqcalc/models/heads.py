"""Output heads beside the energy: per-atom charges, dipoles and polarisabilities read from a
family's equivariant features.

A family that can feed them implements :meth:`~eqcalc.models.base.AtomisticModel.atomic_features`,
returning its energy outputs together with :class:`AtomFeatures`: invariant scalars and polar
vectors per atom. The heads map those to per-atom quantities that are equivariant by
construction,

    q_i                          charge (invariant), e
    p_i = Σ_c v_ic g_c(s_i)      atomic dipole (polar vector), e·Å
    α_i = a(s_i) I + Σ_k u_ik ⊗ u_ik,   u_ik = Σ_c v_ic W_ck h_k(s_i)
                                 atomic polarisability (symmetric rank 2, even), Å³

with a(s) > 0 (softplus), so every α_i, and every sum of them, is positive definite. The
structure's dipole and polarisability are assembled from them with the positions by
:func:`eqcalc.properties.structure_responses`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..nn import mlp

#: the tensor outputs a model can have beside its energy (ASE's property names)
RESPONSES = ("dipole", "polarizability")


class AtomFeatures(NamedTuple):
    """Per-atom features the heads read.

    Attributes:
        scalars: (N, S) invariant under rotations, reflections and translations.
        vectors: (N, 3, V) Cartesian polar vectors: rotate with the structure, flip sign under inversion.
    """

    scalars: torch.Tensor
    vectors: torch.Tensor


class DipoleHead(nn.Module):
    """Charges q_i (N,) in e and atomic dipoles p_i (N, 3) in e·Å."""

    def __init__(self, num_scalars: int, num_vectors: int, hidden: int):
        super().__init__()
        self.charge = mlp([num_scalars, hidden, 1])
        self.vector_weights = nn.Linear(num_scalars, num_vectors)

    def forward(self, features: AtomFeatures) -> dict[str, torch.Tensor]:
        charges = self.charge(features.scalars).squeeze(-1)
        dipoles = torch.einsum("nac,nc->na", features.vectors, self.vector_weights(features.scalars))
        return {"charges": charges, "atomic_dipoles": dipoles}


class PolarizabilityHead(nn.Module):
    """Atomic polarisabilities α_i (N, 3, 3) in Å³ (polarisability volumes), positive definite."""

    def __init__(self, num_scalars: int, num_vectors: int, hidden: int, rank: int = 4):
        super().__init__()
        self.isotropic = mlp([num_scalars, hidden, 1])
        self.mix = nn.Linear(num_vectors, rank, bias=False)
        self.gates = nn.Linear(num_scalars, rank)

    def forward(self, features: AtomFeatures) -> dict[str, torch.Tensor]:
        isotropic = nn.functional.softplus(self.isotropic(features.scalars).squeeze(-1))
        directions = self.mix(features.vectors) * self.gates(features.scalars)[:, None, :]  # (N, 3, rank)
        eye = torch.eye(3, dtype=isotropic.dtype, device=isotropic.device)
        alpha = isotropic[:, None, None] * eye + torch.einsum("nak,nbk->nab", directions, directions)
        return {"atomic_polarizabilities": alpha}


HEADS = {"dipole": DipoleHead, "polarizability": PolarizabilityHead}


def build_heads(outputs: tuple[str, ...], num_scalars: int, num_vectors: int) -> nn.ModuleDict:
    """One head per entry of ``outputs`` (names from :data:`RESPONSES`), sized for the features."""
    hidden = max(num_scalars // 2, 1)
    return nn.ModuleDict({name: HEADS[name](num_scalars, num_vectors, hidden) for name in outputs})
