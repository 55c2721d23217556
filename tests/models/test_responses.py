"""Dipoles and polarisabilities of the families with vector features: a polar vector and a
rank-2 tensor under O(3), invariant under translations and permutations, charge-conserving,
from the same pass as the energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

import eqcalc
from eqcalc.testing.physics import evaluate, evaluate_responses, response_symmetry_errors

FAMILIES = {
    "painn": dict(num_features=8, num_interactions=2),
    "egnn": dict(num_features=8, num_layers=3),
    "nequip": dict(num_features=4, num_layers=2, lmax=2),
    "mace": dict(num_channels=4, num_layers=2, max_L=1, lmax=2, correlation=2),
}


def response_model(family: str, outputs=("dipole", "polarizability")) -> eqcalc.AtomisticModel:
    torch.manual_seed(1)
    model = eqcalc.build_model(family, species=["H", "C", "O"], cutoff=4.0, outputs=list(outputs), **FAMILIES[family])
    with torch.no_grad():  # heads start small: make every output of them of order one
        for parameter in model.output_heads.parameters():
            parameter.normal_(0.0, 1.0)
    return model.double()


@pytest.fixture
def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


@pytest.mark.parametrize("family", FAMILIES)
def test_dipole_rotates_as_a_polar_vector_and_polarizability_as_a_tensor(family, ethanol):
    model = response_model(family)
    reference = evaluate_responses(model, ethanol)
    assert np.abs(reference["dipole"]).max() > 1e-3  # a dipole that is there to rotate
    assert np.abs(reference["polarizability"] - np.trace(reference["polarizability"]) / 3 * np.eye(3)).max() > 1e-3
    errors = response_symmetry_errors(model, ethanol, num_transforms=6, seed=3)
    assert errors["dipole"] < 1e-10
    assert errors["polarizability"] < 1e-10


@pytest.mark.parametrize("family", FAMILIES)
def test_charged_dipole_does_not_depend_on_the_origin_and_charges_sum_to_the_total(family, ethanol):
    model = response_model(family, outputs=["dipole"])
    shifted = ethanol.copy()
    shifted.translate([40.0, -7.0, 3.0])
    for charge in (0.0, 1.0, -2.0):
        result = evaluate_responses(model, ethanol, total_charge=charge)
        assert result["charges"].sum() == pytest.approx(charge, abs=1e-12)
        np.testing.assert_allclose(evaluate_responses(model, shifted, charge)["dipole"], result["dipole"], atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_polarizability_is_symmetric_and_positive_definite(family, ethanol):
    alpha = evaluate_responses(response_model(family, outputs=["polarizability"]), ethanol)["polarizability"]
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-12)
    assert np.linalg.eigvalsh(alpha).min() > 0


def test_heads_change_neither_the_energy_nor_the_forces(ethanol):
    plain = response_model("painn", outputs=())
    with_heads = response_model("painn")
    with_heads.load_state_dict(plain.state_dict(), strict=False)
    a, b = evaluate(plain, ethanol), evaluate(with_heads, ethanol)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])


def test_a_saved_model_keeps_its_heads(tmp_path, ethanol):
    model = response_model("nequip")
    eqcalc.save_model(model, tmp_path / "m.pt")
    loaded = eqcalc.load_model(tmp_path / "m.pt")
    assert loaded.outputs == ("dipole", "polarizability")
    for key, value in evaluate_responses(model, ethanol).items():
        np.testing.assert_array_equal(evaluate_responses(loaded, ethanol)[key], value)


@pytest.mark.parametrize(
    "family, hyper", [("schnet", {}), ("nequip", {"lmax": 0}), ("mace", {"max_L": 0}), ("egnn", {"num_layers": 1})]
)
def test_families_without_vector_features_refuse_tensor_outputs(family, hyper):
    with pytest.raises(ValueError, match="no equivariant vector features"):
        eqcalc.build_model(family, species=[1, 8], outputs=["dipole"], **hyper)


def test_unknown_output_names_are_refused():
    with pytest.raises(ValueError, match="outputs must be distinct names from"):
        eqcalc.build_model("painn", species=[1, 8], outputs=["dipoles"])


@pytest.mark.parametrize("family", ["painn", "mace"])
def test_calculator_gives_dipole_charges_and_polarizability_also_in_chunks(family, ethanol):
    from ase.calculators.calculator import PropertyNotImplementedError

    model = response_model(family)
    cluster = ethanol.copy()  # three molecules 10 Å apart: chunks of one molecule each fit 100 edges
    for k in (1, 2):
        other = ethanol.copy()
        other.translate([10.0 * k, 0.0, 0.0])
        cluster += other
    cluster.info["charge"] = 1.0
    expected = evaluate_responses(model, cluster, total_charge=1.0)
    for max_edges, chunked in ((None, False), (100, True)):  # one evaluation, and chunks with their halos
        calc = eqcalc.EquivariantCalculator(model, max_edges=max_edges, kernels=False)
        atoms = cluster.copy()
        atoms.calc = calc
        np.testing.assert_allclose(atoms.get_dipole_moment(), expected["dipole"], atol=1e-10)
        np.testing.assert_allclose(atoms.get_charges(), expected["charges"], atol=1e-10)
        np.testing.assert_allclose(calc.get_property("polarizability"), expected["polarizability"], atol=1e-10)
        assert (calc.num_chunks > 1) == chunked
    crystal = ethanol.copy()
    crystal.set_cell([12.0, 12.0, 12.0])
    crystal.pbc = True
    crystal.calc = eqcalc.EquivariantCalculator(model, kernels=False)
    with pytest.raises(PropertyNotImplementedError, match="dipole of a periodic structure"):
        crystal.get_dipole_moment()


def test_committee_dipole_is_the_members_mean(ethanol):
    first, second = response_model("painn"), response_model("painn")
    with torch.no_grad():
        for parameter in second.output_heads.parameters():
            parameter.mul_(0.5)
    calc = eqcalc.EquivariantCalculator([first, second], kernels=False)
    ethanol.calc = calc
    mean = (evaluate_responses(first, ethanol)["dipole"] + evaluate_responses(second, ethanol)["dipole"]) / 2
    np.testing.assert_allclose(ethanol.get_dipole_moment(), mean, atol=1e-10)
