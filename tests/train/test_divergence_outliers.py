"""Training that diverges, and data with wrong labels, stop with a message naming what happened."""

import ase.io
import numpy as np
import pytest

from eqcalc.cli import main
from eqcalc.data.readers import read_structures
from eqcalc.train.config import load_config
from eqcalc.train.outliers import find_outliers
from eqcalc.train.trainer import BEST_MODEL_NAME, Trainer

TINY = {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}}


def config(train_file, output, **options):
    values = {
        "train": str(train_file), "valid_count": 4, "batch_size": 4, "output": str(output), "progress": False,
        "model": TINY, "seed": 3, "lr": 5e-3, "device": "cpu", "max_epochs": 2, **options,
    }
    return load_config(overrides=values)


@pytest.fixture
def frames(ethanol_file):
    return ase.io.read(ethanol_file, ":24")


def write(frames, path):
    ase.io.write(path, frames)
    return path


def test_a_huge_learning_rate_stops_training_with_a_message(frames, tmp_path):
    """lr 1e6 (clipped steps of 1e7) sends the loss up by many orders within the first epoch: the
    run must stop saying so, not finish and save a 'best' model."""
    train = write(frames, tmp_path / "train.extxyz")
    with pytest.raises(FloatingPointError, match=r"grew from .* \(first batch\) to .*training diverged.*--lr \(now 1e\+06\)"):
        Trainer(config(train, tmp_path / "run", lr=1e6, warmup_epochs=0, dtype="float64")).fit()
    assert not (tmp_path / "run" / BEST_MODEL_NAME).exists()


def test_a_normal_run_is_not_called_divergent(frames, tmp_path):
    train = write(frames, tmp_path / "train.extxyz")
    summary = Trainer(config(train, tmp_path / "run")).fit()
    assert summary["epochs"] == 2 and np.isfinite(summary["best_valid_loss"])


@pytest.mark.parametrize("quantity", ["energy", "forces"])
def test_an_outlier_frame_is_named_and_training_refused(frames, tmp_path, capsys, quantity):
    bad = 13
    if quantity == "energy":
        frames[bad].calc.results["energy"] += 1e6
    else:
        frames[bad].calc.results["forces"][2, 1] = 1e4
    train = write(frames, tmp_path / "train.extxyz")
    code = main(["train", "--train", str(train), "--output", str(tmp_path / "run"), "--max-epochs", "1"])
    message = capsys.readouterr().err
    assert code == 2
    assert f"frame {bad}:" in message and "outlier_threshold" in message
    assert len(message.strip().splitlines()) == 1
    found = find_outliers(read_structures(str(train)), 50.0)
    assert [(o.index, o.quantity) for o in found] == [(bad, quantity)]


def test_an_outlier_check_can_be_turned_off(frames, tmp_path):
    frames[5].calc.results["energy"] += 1e6
    train = write(frames, tmp_path / "train.extxyz")
    Trainer(config(train, tmp_path / "run", outlier_threshold=None, max_epochs=0))


def test_real_data_have_no_outliers(ethanol_file, silicon_file):
    """Ordinary thermal and mixed-phase data (rMD17 ethanol, mlearn Si) pass the default threshold,
    while moving any single frame's energy by 20 eV/atom (a frame in other units) is caught."""
    for path in (ethanol_file, silicon_file):
        structures = read_structures(str(path))
        assert find_outliers(structures, 50.0) == []
        structures[3].energy += structures[3].num_atoms * 20.0
        assert [o.index for o in find_outliers(structures, 50.0)] == [3]
