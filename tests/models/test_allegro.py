"""Allegro: the shared physics suite, equivariant edge tensors, and strict locality (which MACE,
a message-passing model, does not have)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3
from irreps_checks import assert_equivariant_layers

from eqcalc.models import build_model
from eqcalc.testing import ModelPhysicsTests, physics

SMALL = {"num_tensor_features": 4, "latent_features": 16, "latent_hidden": 16, "edge_hidden": 8, "num_basis": 4}


class TestAllegroScalars(ModelPhysicsTests):
    family = "allegro"
    hyper = {**SMALL, "lmax": 0, "num_layers": 1}


class TestAllegroVectors(ModelPhysicsTests):
    family = "allegro"
    hyper = {**SMALL, "lmax": 1, "parity": False, "num_layers": 2}


class TestAllegroTensorsParity(ModelPhysicsTests):
    family = "allegro"
    hyper = {**SMALL, "lmax": 2, "parity": True, "num_layers": 3}


def small_allegro(**hyper) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("allegro", species=[1, 6, 8], cutoff=4.0, **{**SMALL, **hyper}).to(torch.float64)


class EdgeTensors:
    """An Allegro model seen through irreps_checks' per-layer check: its edge tensor features
    V⁰ … V^{T−1} (per edge) as the "node features"."""

    def __init__(self, model):
        self.model = model
        self.cutoff, self.species_table, self.dtype = model.cutoff, model.species_table, model.dtype
        self.feature_irreps = model.tensor_irreps

    def node_features(self, species, edge_index, edge_vectors):
        return self.model.edge_features(species, edge_index, edge_vectors).tensors


@pytest.mark.parametrize("lmax, parity", [(1, False), (2, True)])
def test_edge_tensors_transform_with_wigner_d(lmax, parity):
    """V_t(R r) = D_t(R) V_t(r) on every edge and layer, rotations and reflections alike."""
    molecule = physics.sample_structures([1, 6, 8])["molecule"]
    assert_equivariant_layers(EdgeTensors(small_allegro(lmax=lmax, parity=parity, num_layers=3)), molecule)


def test_layers_keep_only_what_the_energy_can_use():
    """The last layer forms only the even scalars of its product; earlier ones only irreps that can
    still reach them: with parity, three layers reach pseudovectors and l = 2 pseudotensors in the
    first layer (they couple back to 1o and 2e), never pseudoscalars (0o couples to odd parity only)."""
    model = small_allegro(lmax=2, parity=True, num_layers=3)
    assert model.tensor_irreps == [o3.Irreps("4x0e+4x1o+4x2e"), o3.Irreps("4x0e+4x1o+4x1e+4x2e+4x2o"),
                                   o3.Irreps("4x0e+4x1o+4x2e")]
    assert model.layers[-1].linear is None
    assert {ir for _, ir in model.layers[-1].tensor_product.irreps_out} == {o3.Irrep("0e")}
    assert model.message_passing_hops == 1


def locality_structure() -> tuple[Atoms, Atoms, list[int]]:
    """A water molecule (atoms 0–2), a carbon bridging to a far carbon (atom 4) that is more than
    4 Å from the water and moves; -> (before, after, the atoms beyond 4 Å of atom 4 both times)."""
    before = Atoms("OH2C2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.3, 0.9, 0.0],
                                        [2.6, 0.5, 0.0], [5.4, 0.2, 0.3]])
    after = before.copy()
    after.positions[4] += [0.2, -0.3, 0.25]
    far = [i for i in range(4)
           if min(np.linalg.norm(a.positions[i] - a.positions[4]) for a in (before, after)) > 4.0]
    return before, after, far


def energy_changes(model) -> np.ndarray:
    """|ΔE_i| (eV) of the atoms more than r_c = 4 Å from the atom that moves."""
    before, after, far = locality_structure()
    assert far == [0, 1, 2] and model.cutoff == 4.0
    return np.abs(physics.evaluate(model, after)["energies"] - physics.evaluate(model, before)["energies"])[far]


def test_energy_of_an_atom_ignores_atoms_beyond_the_cutoff():
    """E_i depends only on the atoms within r_c of i: moving an atom that stays beyond r_c of i
    (but within r_c of i's neighbour) leaves E_i unchanged."""
    model = physics.randomize_energy_offsets(small_allegro(lmax=2, num_layers=3)).to(torch.float64)
    assert energy_changes(model).max() < 1e-13


def test_message_passing_model_fails_the_locality_check():
    """The check above can fail: in two-layer MACE the moving atom reaches the water through the bridge."""
    torch.manual_seed(0)
    mace = build_model("mace", species=[1, 6, 8], cutoff=4.0, num_channels=4, max_L=1, lmax=2, num_layers=2)
    assert energy_changes(physics.randomize_energy_offsets(mace).to(torch.float64)).max() > 1e-6


@pytest.mark.parametrize("hyper, message", [
    ({"lmax": 4}, "lmax = 0…3"),
    ({"num_layers": 0}, "num_layers ≥ 1"),
    ({"num_tensor_features": 0}, "num_tensor_features ≥ 1"),
    ({"latent_features": -2}, "latent_features ≥ 1"),
])
def test_rejects_bad_hyperparameters(hyper, message):
    with pytest.raises(ValueError, match=message):
        build_model("allegro", species=[1], **hyper)
