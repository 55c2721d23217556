"""Committees in the ASE calculator: the members' mean and spread on one neighbour list."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError

import eqcalc
from eqcalc.testing.physics import random_orthogonal, randomize_energy_offsets, transformed


def member(family: str, seed: int, **hyper) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = eqcalc.build_model(family, species=["H", "C", "O", "Cu"], cutoff=4.0, **hyper)
    return randomize_energy_offsets(model, seed=seed).double().eval()


@pytest.fixture(scope="module")
def members():
    return [member("painn", 1, num_features=8, num_interactions=2), member("painn", 2, num_features=8, num_interactions=2),
            member("mace", 3, num_channels=4, max_L=1, lmax=2, correlation=2, num_layers=2)]


@pytest.fixture
def cu_cell():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.1, seed=3)
    return atoms


def separate(members, atoms, **options):
    """Each member's energy, forces and stress from its own calculator."""
    rows = []
    for model in members:
        atoms.calc = eqcalc.EquivariantCalculator(model, **options)
        rows.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress() if atoms.pbc.any() else None))
    return rows


@pytest.mark.parametrize("kernels", [False, True])
def test_mean_and_spread_equal_the_members_own_calculators(members, cu_cell, kernels):
    rows = separate(members, cu_cell, kernels=kernels)
    cu_cell.calc = eqcalc.EquivariantCalculator(members, kernels=kernels)
    energies = np.array([e for e, _, _ in rows])
    forces = np.stack([f for _, f, _ in rows])
    stress = np.stack([s for _, _, s in rows])
    assert cu_cell.get_potential_energy() == pytest.approx(energies.mean(), abs=1e-10)
    np.testing.assert_allclose(cu_cell.get_forces(), forces.mean(0), atol=1e-10)
    np.testing.assert_allclose(cu_cell.get_stress(), stress.mean(0), atol=1e-10)
    results = cu_cell.calc.results
    assert results["energy_std"] == pytest.approx(energies.std(ddof=1), abs=1e-10)
    expected = np.sqrt(((forces - forces.mean(0)) ** 2).sum(axis=(0, 2)) / 2)
    np.testing.assert_allclose(results["forces_std"], expected, atol=1e-10)
    np.testing.assert_allclose(results["stress_std"], stress.std(0, ddof=1), atol=1e-10)
    np.testing.assert_allclose(results["forces_committee"], forces, atol=1e-10)
    assert results["forces_std"].shape == (len(cu_cell),) and (results["forces_std"] > 0).all()
    np.testing.assert_array_equal(cu_cell.calc.get_property("forces_std"), results["forces_std"])


def test_committee_of_one_is_the_model(members):
    atoms = molecule("CH3CH2OH")
    alone = separate(members[:1], atoms)[0]
    atoms.calc = eqcalc.EquivariantCalculator(members[:1])
    assert atoms.get_potential_energy() == alone[0]
    np.testing.assert_array_equal(atoms.get_forces(), alone[1])
    with pytest.raises(PropertyNotImplementedError):
        atoms.calc.get_property("forces_std")


def test_committee_forces_are_the_gradient_of_the_mean_energy(members, cu_cell):
    cu_cell.calc = eqcalc.EquivariantCalculator(members, kernels=False)
    forces = cu_cell.get_forces()
    delta, numeric = 1e-5, np.zeros_like(forces)
    for i in range(len(cu_cell)):
        for k in range(3):
            shifted = []
            for sign in (1, -1):
                probe = cu_cell.copy()
                probe.positions[i, k] += sign * delta
                probe.calc = cu_cell.calc
                shifted.append(probe.get_potential_energy())
            numeric[i, k] = -(shifted[0] - shifted[1]) / (2 * delta)
    np.testing.assert_allclose(forces, numeric, atol=1e-7)


def test_spread_is_invariant_and_permutes_with_the_atoms(members):
    atoms = molecule("CH3CH2OH")
    atoms.calc = eqcalc.EquivariantCalculator(members, kernels=False)
    atoms.get_potential_energy()
    reference = dict(atoms.calc.results)
    rng = np.random.default_rng(0)
    for reflection in (False, True):
        rotation = random_orthogonal(rng, reflection=reflection)
        permutation = rng.permutation(len(atoms))
        moved = transformed(atoms, rotation, rng.normal(size=3), permutation)
        moved.calc = eqcalc.EquivariantCalculator(members, kernels=False)
        moved.get_potential_energy()
        results = moved.calc.results
        assert results["energy_std"] == pytest.approx(reference["energy_std"], abs=1e-10)
        np.testing.assert_allclose(results["forces_std"], reference["forces_std"][permutation], atol=1e-10)
        np.testing.assert_allclose(results["forces"], reference["forces"][permutation] @ rotation.T, atol=1e-10)


def test_chunked_committee_equals_one_pass(members):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 3)
    atoms.rattle(0.05, seed=5)
    atoms.calc = eqcalc.EquivariantCalculator(members, max_edges=None)
    atoms.get_potential_energy()
    whole = dict(atoms.calc.results)
    atoms.calc = eqcalc.EquivariantCalculator(members, max_edges=800)
    atoms.get_potential_energy()
    assert atoms.calc.num_chunks > 1
    for key in ("energy", "energy_std", "forces", "forces_std", "stress", "stress_std"):
        np.testing.assert_allclose(atoms.calc.results[key], whole[key], atol=1e-10, err_msg=key)


def test_members_must_share_cutoff_and_elements(members):
    other_cutoff = eqcalc.build_model("painn", species=["H", "C", "O", "Cu"], cutoff=5.0, num_features=8)
    with pytest.raises(ValueError, match="cutoff 5 Å, member 0 has 4 Å"):
        eqcalc.EquivariantCalculator([members[0], other_cutoff])
    other_elements = eqcalc.build_model("painn", species=["H", "O"], cutoff=4.0, num_features=8)
    with pytest.raises(ValueError, match="same elements"):
        eqcalc.EquivariantCalculator([members[0], other_elements])
    with pytest.raises(ValueError, match="at least one model"):
        eqcalc.EquivariantCalculator([])
