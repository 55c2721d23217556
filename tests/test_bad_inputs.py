"""Bad inputs to the calculator and to eqcalc md: a clear ValueError or one line and exit 2."""

import pytest
import torch
from ase import Atoms

import eqcalc
from eqcalc.cli import main


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return eqcalc.build_model("schnet", species=["H", "O"], num_features=8, num_interactions=1).double()


@pytest.mark.parametrize("number", [200, 119, -1, 0])
def test_atomic_number_outside_the_periodic_table(model, number):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.8]])
    atoms.numbers[1] = number
    atoms.calc = eqcalc.EquivariantCalculator(model)
    with pytest.raises(ValueError, match="which the model does not know"):
        atoms.get_potential_energy()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: device='cuda' is valid here")
def test_cuda_device_without_cuda_is_a_clear_error(model, tmp_path):
    with pytest.raises(ValueError, match="device 'cuda' was asked for, but"):
        eqcalc.EquivariantCalculator(model, device="cuda")
    eqcalc.save_model(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="use device='cpu'"):
        eqcalc.load_model(tmp_path / "m.pt", device="cuda:0")
    with pytest.raises(ValueError, match="Unknown device 'gpu7'"):
        eqcalc.EquivariantCalculator(model, device="gpu7")


def test_md_on_a_single_atom_names_the_missing_degrees_of_freedom(model, tmp_path, capsys):
    """(Unreadable and empty structure files: tests/test_fault_matrix.py.)"""
    message = "no degree of freedom"
    structure, model_file = tmp_path / "s.extxyz", tmp_path / "m.pt"
    structure.write_text("1\nProperties=species:S:1:pos:R:3\nO 0 0 0\n")
    eqcalc.save_model(model, model_file)
    code = main(["md", "--structure", str(structure), "--model", str(model_file), "--steps", "2",
                 "--output", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0], error
