"""EGNN through the shared physics suite, plus checks of its moved positions."""

import numpy as np
import pytest
import torch

from eqcalc.testing.physics import model_inputs
from eqcalc.testing import ModelPhysicsTests, physics

HYPER = {"num_features": 8, "num_layers": 3}


class TestEGNNCosine(ModelPhysicsTests):
    family = "egnn"
    hyper = {**HYPER, "num_basis": 8, "cutoff_fn": "cosine"}


class TestEGNNPolynomialNoBasis(ModelPhysicsTests):
    """The paper's form: φ_e sees the squared distance only."""

    family = "egnn"
    hyper = {**HYPER, "num_basis": 0, "cutoff_fn": "polynomial"}


def updated_positions(model, atoms):
    """Positions (N, 3) Å after EGNN's coordinate updates, as numpy."""
    with torch.no_grad():
        _, displacements = model.propagate(*model_inputs(model, atoms))
    return atoms.positions + displacements.numpy()


@pytest.fixture(scope="module")
def model():
    return TestEGNNCosine().build(torch.float64)


@pytest.fixture(scope="module")
def structures():
    return physics.sample_structures(TestEGNNCosine.species)


@pytest.mark.parametrize("kind", ["molecule", "periodic"])
def test_updated_positions_follow_rotations_translations_permutations(model, structures, kind):
    """x'(Q x + t) = Q x'(x) + t for proper and improper rotations Q, with atoms reordered."""
    atoms = structures[kind]
    positions = updated_positions(model, atoms)
    assert np.abs(positions - atoms.positions).max() > 1e-3, "coordinate updates are trivially zero"
    rng = np.random.default_rng(2)
    for reflection in (False, True):
        rotation = physics.random_orthogonal(rng, reflection=reflection)
        translation = rng.normal(scale=3.0, size=3)
        permutation = rng.permutation(len(atoms))
        moved = updated_positions(model, physics.transformed(atoms, rotation, translation, permutation))
        expected = positions[permutation] @ rotation.T + translation
        np.testing.assert_allclose(moved, expected, rtol=0, atol=1e-10)


def test_updated_positions_agree_across_periodic_images(model, structures):
    """Every copy of an atom in a supercell moves like the atom in the unit cell."""
    atoms = structures["periodic"]
    repeat = (2, 1, 2)
    supercell = atoms.repeat(repeat)
    moves = updated_positions(model, atoms) - atoms.positions
    supercell_moves = updated_positions(model, supercell) - supercell.positions
    np.testing.assert_allclose(supercell_moves, np.tile(moves, (int(np.prod(repeat)), 1)), rtol=0, atol=1e-10)


def test_updated_positions_do_not_depend_on_wrapping(model, structures):
    """Moving an atom by a lattice vector moves its updated position by the same vector, no other change."""
    atoms = structures["periodic"]
    wrapped = atoms.copy()
    lattice_shift = atoms.cell.array[0] - 2 * atoms.cell.array[2]
    wrapped.positions[1] += lattice_shift
    expected = updated_positions(model, atoms)
    expected[1] += lattice_shift
    np.testing.assert_allclose(updated_positions(model, wrapped), expected, rtol=0, atol=1e-10)
