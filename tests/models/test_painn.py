"""PaiNN through the shared physics suite, plus checks of its vector features."""

import numpy as np
import pytest
import torch
from ase import Atoms

from eqcalc.data.graph import atoms_to_graph
from eqcalc.models import build_model
from eqcalc.properties import edge_vectors
from eqcalc.testing import ModelPhysicsTests, physics

HYPER = {"num_features": 8, "num_interactions": 2, "num_basis": 8}


class TestPaiNNCosine(ModelPhysicsTests):
    family = "painn"
    hyper = {**HYPER, "cutoff_fn": "cosine"}


class TestPaiNNPolynomial(ModelPhysicsTests):
    family = "painn"
    hyper = {**HYPER, "cutoff_fn": "polynomial"}


def atom_features(model, atoms):
    """PaiNN's final scalar (N, F) and vector (N, 3, F) features of ``atoms``, as numpy arrays."""
    graph = atoms_to_graph(atoms, model.cutoff)
    vectors = edge_vectors(graph.positions, graph.cell, graph.edge_index, graph.shifts, graph.batch)
    with torch.no_grad():
        scalars, vector_features = model.atom_features(model.species_table[graph.numbers], graph.edge_index, vectors)
    return scalars.numpy(), vector_features.numpy()


@pytest.fixture(scope="module")
def model():
    return TestPaiNNCosine().build(torch.float64)


@pytest.mark.parametrize("kind", ["molecule", "periodic"])
def test_vector_features_are_polar_vectors(model, kind):
    """v(Q r + t) = Q v(r) for rotations and improper rotations (inversion flips v); s is invariant."""
    atoms = physics.sample_structures(TestPaiNNCosine.species)[kind]
    scalars, vectors = atom_features(model, atoms)
    assert np.abs(vectors).max() > 1e-3, "vector features are trivially zero"
    rng = np.random.default_rng(1)
    identity = np.arange(len(atoms))
    for reflection in (False, True):
        rotation = physics.random_orthogonal(rng, reflection=reflection)
        moved = physics.transformed(atoms, rotation, rng.normal(scale=3.0, size=3), identity)
        moved_scalars, moved_vectors = atom_features(model, moved)
        np.testing.assert_allclose(moved_scalars, scalars, rtol=0, atol=1e-10)
        np.testing.assert_allclose(moved_vectors, np.einsum("ab,nbf->naf", rotation, vectors), rtol=0, atol=1e-10)


def test_inversion_flips_vector_features(model):
    atoms = physics.sample_structures(TestPaiNNCosine.species)["molecule"]
    inverted = physics.transformed(atoms, -np.eye(3), np.zeros(3), np.arange(len(atoms)))
    _, vectors = atom_features(model, atoms)
    _, inverted_vectors = atom_features(model, inverted)
    np.testing.assert_allclose(inverted_vectors, -vectors, rtol=0, atol=1e-10)


def test_forces_finite_where_vector_features_vanish():
    """In a symmetric O–C–O the carbon's first-layer vectors cancel exactly; ‖V v‖ must keep a finite gradient."""
    torch.manual_seed(0)
    single_layer = build_model("painn", species=[6, 8], cutoff=4.0, **{**HYPER, "num_interactions": 1})
    model = physics.randomize_energy_offsets(single_layer).to(torch.float64)
    molecule = Atoms("OCO", positions=[[-1.25, 0.0, 0.0], [0.0, 0.0, 0.0], [1.25, 0.0, 0.0]])
    _, vectors = atom_features(model, molecule)
    assert np.abs(vectors[1]).max() == 0.0 and np.abs(vectors[0]).max() > 1e-3
    assert np.all(np.isfinite(physics.evaluate(model, molecule)["forces"]))
    assert physics.force_fd_error(model, molecule) < 1e-6
