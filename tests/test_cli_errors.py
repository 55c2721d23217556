"""Commands on a model that outputs NaN end in one line and a non-zero exit, never exit 0 or a traceback."""

import ase.io
import pytest
import torch
from ase.build import bulk

import eqcalc
from eqcalc.cli import main


@pytest.fixture
def nan_model_file(tmp_path):
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=[29], cutoff=4.0, num_features=8, num_interactions=1).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    eqcalc.save_model(model, tmp_path / "nan.pt")
    return tmp_path / "nan.pt"


@pytest.fixture
def labelled_file(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.info["energy"] = -10.0
    atoms.arrays["forces"] = 0.1 * atoms.positions
    ase.io.write(tmp_path / "cu.extxyz", [atoms], format="extxyz")
    return tmp_path / "cu.extxyz"


@pytest.mark.parametrize("command", ["eval", "check", "relax"])
def test_non_finite_model_output_is_one_line_and_exit_2(command, nan_model_file, labelled_file, tmp_path, capsys):
    args = {
        "eval": ["eval", str(nan_model_file), str(labelled_file)],
        "check": ["check", str(nan_model_file), str(labelled_file)],
        "relax": ["relax", "--structure", str(labelled_file), "--model", str(nan_model_file), "--output", str(tmp_path / "relax")],
    }[command]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"eqcalc {command}: error:"), error
    assert "non-finite" in error[0]
