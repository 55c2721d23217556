"""PaiNN through the shared physics suite, plus checks of its vector features."""

import numpy as np
import pytest
import torch
from ase import Atoms

from eqcalc.testing.physics import model_inputs
from eqcalc.models import build_model
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
    with torch.no_grad():
        scalars, vector_features = model.atom_features(*model_inputs(model, atoms))
    return scalars.numpy(), vector_features.numpy()


@pytest.fixture(scope="module")
def model():
    return TestPaiNNCosine().build(torch.float64)


@pytest.mark.parametrize("kind", ["molecule", "periodic"])
def test_vector_features_are_polar_vectors(model, kind):
    """v(Q r + t) = Q v(r) for a rotation, an improper rotation and the inversion Q = −1
    (which flips v); the scalar features s are invariant."""
    atoms = physics.sample_structures(TestPaiNNCosine.species)[kind]
    scalars, vectors = atom_features(model, atoms)
    assert np.abs(vectors).max() > 1e-3, "vector features are trivially zero"
    rng = np.random.default_rng(1)
    identity = np.arange(len(atoms))
    for rotation in (physics.random_orthogonal(rng), physics.random_orthogonal(rng, reflection=True), -np.eye(3)):
        moved = physics.transformed(atoms, rotation, rng.normal(scale=3.0, size=3), identity)
        moved_scalars, moved_vectors = atom_features(model, moved)
        np.testing.assert_allclose(moved_scalars, scalars, rtol=0, atol=1e-10)
        np.testing.assert_allclose(moved_vectors, np.einsum("ab,nbf->naf", rotation, vectors), rtol=0, atol=1e-10)


def test_forces_finite_where_vector_features_vanish():
    """In a symmetric O–C–O the carbon's first-layer vectors cancel exactly; ‖V v‖ keeps a finite gradient."""
    torch.manual_seed(0)
    single_layer = build_model("painn", species=[6, 8], cutoff=4.0, **{**HYPER, "num_interactions": 1})
    model = physics.randomize_energy_offsets(single_layer).to(torch.float64)
    molecule = Atoms("OCO", positions=[[-1.25, 0.0, 0.0], [0.0, 0.0, 0.0], [1.25, 0.0, 0.0]])
    _, vectors = atom_features(model, molecule)
    assert np.abs(vectors[1]).max() == 0.0 and np.abs(vectors[0]).max() > 1e-3
    assert np.all(np.isfinite(physics.evaluate(model, molecule)["forces"]))
    assert physics.force_fd_error(model, molecule) < 1e-6
