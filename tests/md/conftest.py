"""Small models and structures for the MD and relaxation tests."""

import pytest
import torch
from ase.build import bulk

import eqcalc
from eqcalc.models.base import AtomisticModel
from eqcalc.nn import build_cutoff, scatter_sum


@pytest.fixture
def cu_model():
    """An untrained float64 SchNet for Cu. With this seed its fcc energy has a minimum near
    a = 3.5 Å (found by scanning seeds), so a crystal there stays together for a few hundred fs."""
    torch.manual_seed(36)
    return eqcalc.build_model(
        "schnet", species=[29], cutoff=5.0, num_features=8, num_interactions=1, num_basis=8, energy_scale=100.0
    ).double()


@pytest.fixture
def cu_crystal():
    """8 Cu atoms, fcc, periodic."""
    return bulk("Cu", "fcc", a=3.5, cubic=True).repeat((2, 1, 1))


class MorseModel(AtomisticModel):
    """A pair potential E = ½ Σ_i Σ_j D[(1 − exp(−α(r_ij − r0)))² − 1] f_c(r_ij) as an eqcalc model.

    Untrained networks have no energy minima (their dimer and fcc curves are monotonic for
    hundreds of seeds), so the relaxation tests use this bound potential instead: it goes through
    the same calculator, autograd forces and stress, and its minima are known.
    """

    def __init__(self, species, cutoff=5.0, *, depth=0.4, alpha=1.4, r0=2.6, **base):
        super().__init__(species, cutoff, **base)
        self.depth, self.alpha, self.r0 = depth, alpha, r0
        self.envelope = build_cutoff("polynomial", cutoff)

    def hyperparameters(self):
        return {"depth": self.depth, "alpha": self.alpha, "r0": self.r0}

    def pair_energy(self, distances: torch.Tensor) -> torch.Tensor:
        """Energy (eV) of one pair at each distance (Å)."""
        decay = torch.exp(-self.alpha * (distances - self.r0))
        return self.depth * ((1 - decay) ** 2 - 1) * self.envelope(distances)

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        return 0.5 * scatter_sum(self.pair_energy(distances), edge_index[0], species.shape[0])


@pytest.fixture
def morse_model():
    return MorseModel([29]).double()
