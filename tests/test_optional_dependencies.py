"""matplotlib is optional (the plots extra): runs skip their plots with a warning, and a plot that
was asked for is a one-line error naming the extra."""

from pathlib import Path

import pytest
import torch
from ase.build import molecule

import eqcalc
from eqcalc import plotting
from eqcalc.cli import main
from eqcalc.md import run


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setattr(plotting, "available", lambda: False)
    plotting._warn_missing.cache_clear()


def test_md_runs_without_matplotlib_and_says_so(no_matplotlib, tmp_path):
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=["H", "O"], cutoff=3.0, num_features=8, num_interactions=1).double()
    with pytest.warns(UserWarning, match=r"matplotlib is not installed.*eqcalc\[plots\]"):
        result = run(molecule("H2O"), model, steps=5, output=tmp_path / "md", progress=False, log_interval=1)
    assert result.completed and (tmp_path / "md" / "log.csv").exists()
    assert not list((tmp_path / "md").glob("*.png"))


def test_eval_plots_without_matplotlib_is_one_line(no_matplotlib, tmp_path, capsys):
    model = eqcalc.build_model("schnet", species=["H", "C", "O"], cutoff=3.0, num_features=8)
    eqcalc.save_model(model, tmp_path / "m.pt")
    data = Path(__file__).parent / "data" / "ethanol_small.extxyz"
    code = main(["eval", str(tmp_path / "m.pt"), str(data), "--plots", str(tmp_path / "p")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and 'pip install "eqcalc[plots]"' in lines[0]
