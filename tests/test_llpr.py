"""One-model uncertainty (LLPR): last-layer features, the fit, the calculator, model files, the command."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

import eqcalc
from eqcalc.cli import main
from eqcalc.data.graph import atoms_to_graph
from eqcalc.llpr import fit_llpr, last_layer_features, last_layer_width
from eqcalc.properties import compute_properties
from eqcalc.testing.physics import random_orthogonal, randomize_energy_offsets, transformed

SPECIES = ["H", "C", "O"]
FAMILIES = {
    "schnet": dict(num_features=8, num_interactions=2),
    "painn": dict(num_features=8, num_interactions=2),
    "egnn": dict(num_features=8, num_layers=2),
    "nequip": dict(num_features=4, num_layers=2, lmax=1),
    "mace": dict(num_channels=4, max_L=1, lmax=2, correlation=2, num_layers=2),
}


def build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = eqcalc.build_model(family, species=SPECIES, cutoff=4.0, **FAMILIES[family])
    return randomize_energy_offsets(model, seed=seed).double().eval()


def frames(count: int, rattle: float, seed: int, teacher=None):
    """Rattled ethanol frames, labelled by ``teacher`` (a model standing in for the reference method)."""
    out = []
    for k in range(count):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(rattle, seed=seed + k)
        if teacher is not None:
            atoms.calc = eqcalc.EquivariantCalculator(teacher)
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def fitted():
    teacher, model = build("painn", seed=1), build("painn", seed=2)
    model.uncertainty = fit_llpr(model, frames(40, 0.05, 0, teacher), frames(10, 0.05, 100, teacher))
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_per_atom_energies_are_linear_in_the_last_layer_features(family):
    """The captured features are exactly what the readout maps linearly onto the atomic energies."""
    model = build(family)
    rows, energies = [], []
    for atoms in frames(30, 0.2, 0):
        graph = atoms_to_graph(atoms, model.cutoff)
        with last_layer_features(model) as features:
            out = compute_properties(model, graph, forces=False)
        rows.append(features(graph.numbers))
        species = model.species_indices(graph.numbers)
        energies.append(out["energies"] - model.element_energies(species))
    rows, energies = torch.cat(rows).numpy(), torch.cat(energies).detach().numpy()
    assert rows.shape[1] == last_layer_width(model) < rows.shape[0]
    weights, *_ = np.linalg.lstsq(rows, energies, rcond=None)
    assert np.abs(rows @ weights - energies).max() < 1e-9 * np.abs(energies).max()


def test_allegro_has_no_one_model_uncertainty():
    model = eqcalc.build_model("allegro", species=SPECIES, cutoff=4.0)
    with pytest.raises(ValueError, match="use a committee"):
        model.readout_layers()


def test_spread_is_invariant_and_permutes_with_the_atoms(fitted):
    atoms = frames(1, 0.1, 7)[0]
    atoms.calc = eqcalc.EquivariantCalculator(fitted)
    atoms.get_forces()
    reference = dict(atoms.calc.results)
    assert reference["forces_std"].shape == (len(atoms),) and (reference["forces_std"] > 0).all()
    rng = np.random.default_rng(0)
    for reflection in (False, True):
        permutation = rng.permutation(len(atoms))
        moved = transformed(atoms, random_orthogonal(rng, reflection), rng.normal(size=3), permutation)
        moved.calc = eqcalc.EquivariantCalculator(fitted)
        moved.get_forces()
        np.testing.assert_allclose(moved.calc.results["forces_std"], reference["forces_std"][permutation], rtol=1e-9)
        assert moved.calc.results["energy_std"] == pytest.approx(reference["energy_std"], rel=1e-9)


def test_fit_is_calibrated_on_the_validation_forces(fitted):
    """α_F makes the mean of forces_std² / |ΔF|² one on the validation set (the NLL optimum)."""
    teacher = build("painn", seed=1)
    valid = frames(10, 0.05, 100, teacher)
    ratios = []
    for atoms in valid:
        reference = atoms.get_forces()
        atoms.calc = eqcalc.EquivariantCalculator(fitted, kernels=False)
        errors = ((atoms.get_forces() - reference) ** 2).sum(1)
        ratios.append(errors / atoms.calc.results["forces_std"] ** 2)
    assert np.mean(np.concatenate(ratios)) == pytest.approx(1.0, rel=1e-6)


def test_model_file_keeps_the_fit_and_chunks_agree(fitted, tmp_path):
    path = tmp_path / "model.pt"
    eqcalc.save_model(fitted, path)
    assert "uncertainty" in torch.load(path, weights_only=True)
    atoms = frames(1, 0.1, 9)[0]
    for k in range(1, 4):  # four molecules 6 Å apart: chunks of whole molecules
        other = frames(1, 0.1, 9 + k)[0]
        other.translate([6.0 * k, 0.0, 0.0])
        atoms += other
    atoms.calc = eqcalc.EquivariantCalculator(fitted)
    atoms.get_forces()
    direct = dict(atoms.calc.results)
    atoms.calc = eqcalc.EquivariantCalculator(str(path), max_edges=200)
    atoms.get_forces()
    assert atoms.calc.num_chunks > 1
    for key in ("forces", "forces_std", "energy_std"):
        np.testing.assert_allclose(atoms.calc.results[key], direct[key], rtol=1e-9, atol=1e-12, err_msg=key)
    plain = build("painn", seed=2)
    atoms.calc = eqcalc.EquivariantCalculator(plain)
    atoms.get_forces()
    assert "forces_std" not in atoms.calc.results


def test_calibrate_command(tmp_path, capsys):
    teacher, model = build("painn", seed=1), build("painn", seed=2)
    import ase.io

    ase.io.write(tmp_path / "train.extxyz", frames(20, 0.05, 0, teacher))
    ase.io.write(tmp_path / "valid.extxyz", frames(5, 0.05, 100, teacher))
    eqcalc.save_model(model, tmp_path / "model.pt")
    command = ["calibrate", str(tmp_path / "model.pt"), "--train", str(tmp_path / "train.extxyz"),
               "--valid", str(tmp_path / "valid.extxyz"), "-o", str(tmp_path / "out.pt")]
    assert main(command) == 0
    assert "forces_std" in capsys.readouterr().out
    atoms = frames(1, 0.1, 3)[0]
    atoms.calc = eqcalc.EquivariantCalculator(str(tmp_path / "out.pt"))
    assert atoms.calc.get_property("forces_std", atoms).shape == (len(atoms),)
    assert main(command) == 2
    assert "already exists" in capsys.readouterr().err
    eqcalc.save_model(eqcalc.build_model("allegro", species=SPECIES, cutoff=4.0), tmp_path / "allegro.pt")
    command[1] = str(tmp_path / "allegro.pt")
    command[-1] = str(tmp_path / "other.pt")
    assert main(command) == 2
    assert "use a committee" in capsys.readouterr().err


def test_fine_tuning_drops_the_base_models_fit(fitted, tmp_path):
    from eqcalc.models.io import read_model_file
    from eqcalc.train.finetune import model_from_base

    eqcalc.save_model(fitted, tmp_path / "base.pt")
    model = model_from_base(read_model_file(tmp_path / "base.pt"), [1, 6, 8], None, "base.pt")
    assert getattr(model, "uncertainty", None) is None
