"""End to end: train a tiny SchNet, checkpoint, resume exactly, evaluate, deploy in the calculator."""

import csv

import ase.io
import numpy as np
import pytest
import torch

from eqcalc import EquivariantCalculator, load_model
from eqcalc.cli import main
from eqcalc.data.dataset import GraphDataset
from eqcalc.data.readers import read_structures
from eqcalc.data.splits import random_split
from eqcalc.train.config import load_config
from eqcalc.train.statistics import compute_statistics
from eqcalc.train.trainer import Trainer, train

TINY = {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}}


@pytest.fixture
def small_train_file(tmp_path, ethanol_file):
    path = tmp_path / "train.extxyz"
    ase.io.write(path, ase.io.read(ethanol_file, ":24"))
    return path


def config(train_file, output, **options):
    values = {
        "train": str(train_file), "valid_count": 4, "batch_size": 4, "output": str(output), "progress": False,
        "model": TINY, "seed": 3, "lr": 5e-3, "warmup_epochs": 1, "scheduler": "plateau",
        "plateau_patience": 0, "plateau_factor": 0.5, "ema_decay": 0.9, "device": "cpu", "dtype": "float64", **options,
    }
    return load_config(overrides=values)


def metrics(output):
    with open(output / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_time_budget_stops_after_an_epoch_and_resume_continues(tmp_path, small_train_file):
    log = []
    summary = Trainer(config(small_train_file, tmp_path, max_epochs=3, max_time=1e-6), log=log.append).fit()
    assert summary["epochs"] == 1
    assert any("budget is spent after epoch 1; --resume with a larger --max-time" in line for line in log)
    resumed = Trainer(config(small_train_file, tmp_path, max_epochs=3, resume=True), log=log.append).fit()
    assert resumed["epochs"] == 3 and [r["epoch"] for r in metrics(tmp_path)] == ["1", "2", "3"]


def test_resume_continues_exactly(tmp_path, small_train_file):
    log = []
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(config(small_train_file, straight, max_epochs=3), log=log.append).fit()
    Trainer(config(small_train_file, split, max_epochs=2), log=log.append).fit()
    Trainer(config(small_train_file, split, max_epochs=3, resume=True), log=log.append).fit()
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name, value in a["model"]["state_dict"].items():
        torch.testing.assert_close(b["model"]["state_dict"][name], value, rtol=1e-12, atol=1e-14)
    for name, value in a["ema"]["shadow"].items():
        torch.testing.assert_close(b["ema"]["shadow"][name], value, rtol=1e-12, atol=1e-14)
    for k, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][k]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-12, atol=0)
    assert a["schedule"] == b["schedule"]
    rows_a, rows_b = metrics(straight), metrics(split)
    assert [r["epoch"] for r in rows_b] == ["1", "2", "3"]
    for ra, rb in zip(rows_a, rows_b):
        for key in ("lr", "train_loss", "valid_loss", "valid_f_mae_meV_A"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-10)
    assert float(rows_a[2]["lr"]) < float(rows_a[1]["lr"]) or float(rows_a[2]["valid_loss"]) < float(rows_a[1]["valid_loss"])


def test_existing_run_is_not_overwritten_and_resume_checks_options(tmp_path, small_train_file):
    output = tmp_path / "run"
    train(config(small_train_file, output, max_epochs=1))
    with pytest.raises(ValueError, match="--resume"):
        Trainer(config(small_train_file, output, max_epochs=2))
    with pytest.raises(ValueError, match=r"lr: 0\.005 → 0\.001"):
        Trainer(config(small_train_file, output, max_epochs=2, resume=True, lr=1e-3))
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        Trainer(config(small_train_file, tmp_path / "empty", resume=True))


def test_best_model_deploys_with_the_training_time_predictions(tmp_path, small_train_file, capsys):
    output = tmp_path / "run"
    assert main(["train", "--train", str(small_train_file), "--model", "schnet", "--max-epochs", "2",
                 "--output", str(output), "--cutoff", "3", "--hyper", "{num_features: 8, num_interactions: 1}",
                 "--valid-count", "4", "--seed", "3", "--no-progress", "--lr", "5e-3", "--dtype", "float64",
                 "--refit-atomic-energies", "false"]) == 0
    rows = metrics(output)
    best = min(rows, key=lambda r: float(r["valid_loss"]))
    _, valid = random_split(read_structures(small_train_file), count=4, seed=3)
    calc = EquivariantCalculator(output / "best_model.pt")
    errors = []
    for s in valid:
        atoms = s.to_atoms()
        atoms.calc = calc
        errors.append(abs(atoms.get_potential_energy() - s.energy) / s.num_atoms)
    assert 1000 * np.mean(errors) == pytest.approx(float(best["valid_e_mae_meV_atom"]), rel=1e-9)
    model = load_model(output / "best_model.pt")  # the training-set statistics travel in the model file
    train_part, _ = random_split(read_structures(small_train_file), count=4, seed=3)
    stats = compute_statistics(GraphDataset(train_part, 3.0), [1, 6, 8])
    assert model.energy_scale.item() == pytest.approx(stats.energy_scale, rel=1e-7)  # buffer created in float32
    assert model.config()["avg_num_neighbors"] == pytest.approx(stats.avg_num_neighbors, rel=1e-12)
    np.testing.assert_allclose(model.element_energies.values.numpy(), stats.atomic_energies, rtol=1e-12)
    capsys.readouterr()
    predictions = tmp_path / "pred.extxyz"
    assert main(["eval", str(output / "best_model.pt"), str(small_train_file), "--plots", str(tmp_path / "plots"),
                 "--predictions", str(predictions)]) == 0
    table = capsys.readouterr().out
    assert "E MAE" in table and str(small_train_file) in table
    assert (tmp_path / "plots" / "train_parity.png").stat().st_size > 1000
    frames = ase.io.read(predictions, ":")
    atoms = frames[5].copy()
    atoms.calc = calc
    assert frames[5].info["eqcalc_energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    assert frames[5].get_potential_energy() == read_structures(small_train_file)[5].energy
    original = ase.io.read(small_train_file, 5)
    assert original.info and all(frames[5].info[key] == value for key, value in original.info.items())


def test_periodic_stress_training_in_float32(tmp_path, silicon_file):
    output = tmp_path / "si"
    summary = train(config(silicon_file, output, max_epochs=1, valid_count=3, dtype="float32", stress_weight=10.0,
                           test=str(silicon_file), batch_size=5))
    assert load_model(output / "best_model.pt").dtype == torch.float32
    row = metrics(output)[0]
    assert np.isfinite(float(row["valid_s_mae_GPa"])) and np.isfinite(float(row["valid_f_mae_meV_A"]))
    assert set(summary["test"]) == {"all", "Vacancy", "Surface", "AIMD-NVT", "Elastic"}
    assert summary["test"]["all"]["structures"] == 13


def test_missing_weighted_labels_are_an_error(tmp_path, silicon_file):
    frames = ase.io.read(silicon_file, ":4")
    for atoms in frames:
        atoms.calc.results.pop("forces")
    path = tmp_path / "no_forces.extxyz"
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match="No training structure has forces.*--forces-weight 0"):
        Trainer(config(path, tmp_path / "out", valid_count=1, forces_weight=10.0))
    # the recipe's weights (auto) leave out what the data lacks and pick the materials recipe for periodic cells
    trainer = Trainer(config(path, tmp_path / "auto", valid_count=1), log=lambda m: None)
    assert (trainer.config.energy_weight, trainer.config.forces_weight, trainer.config.stress_weight) == (100.0, 0.0, 1e4)


def test_tensorboard_option(tmp_path, small_train_file):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            Trainer(config(small_train_file, tmp_path / "tb", tensorboard=True, max_epochs=1))
        return
    Trainer(config(small_train_file, tmp_path / "tb", tensorboard=True, max_epochs=1)).fit()
    assert any((tmp_path / "tb" / "tensorboard").iterdir())


def test_damaged_checkpoint_is_refused_with_a_way_out(tmp_path):
    from eqcalc.train.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "eqcalc-checkpoint", "weights": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="not a readable checkpoint file .* start without --resume"):
        load_checkpoint(path)


def test_train_count_takes_nested_subsets_outside_the_validation_part(small_train_file, tmp_path):
    from eqcalc.train.data import load_training_data

    def positions(data_set):
        return {s.positions.tobytes() for s in data_set.structures}

    full = load_training_data(config(small_train_file, tmp_path))
    subsets = [load_training_data(config(small_train_file, tmp_path, train_count=n)) for n in (5, 10)]
    assert [len(s.train) for s in subsets] == [5, 10]
    assert positions(subsets[0].train) < positions(subsets[1].train) < positions(full.train)
    assert positions(subsets[1].valid) == positions(full.valid)
    assert not positions(subsets[1].train) & positions(full.valid)
    with pytest.raises(ValueError, match="train_count"):
        load_training_data(config(small_train_file, tmp_path, train_count=100))


def test_stage_two_switches_weights_resumes_exactly_and_picks_its_best(tmp_path, small_train_file):
    """Energy-heavy stage two from epoch 2 (0-based): a run split exactly at the switch equals the
    straight run, the loss is the stage-two one afterwards, and the best model is a stage-two epoch."""
    # stage-two losses far above stage-one ones: only the reset at the switch lets a stage-two epoch be best
    options = dict(stage_two_epoch=2, stage_two_energy_weight=1e5, stage_two_forces_weight=1.0, plateau_patience=0)
    straight, split = tmp_path / "straight", tmp_path / "split"
    trainer = Trainer(config(small_train_file, straight, max_epochs=4, **options), log=lambda m: None)
    trainer.fit()
    assert (trainer.loss_fn.energy_weight, trainer.loss_fn.forces_weight) == (1e5, 1.0)
    Trainer(config(small_train_file, split, max_epochs=2, **options), log=lambda m: None).fit()
    Trainer(config(small_train_file, split, max_epochs=4, resume=True, **options), log=lambda m: None).fit()
    rows_a, rows_b = metrics(straight), metrics(split)
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["valid_loss"]) == pytest.approx(float(rb["valid_loss"]), rel=1e-10)
    stage_two_losses = [float(r["valid_loss"]) for r in rows_a[2:]]
    assert trainer.best_valid_loss == pytest.approx(min(stage_two_losses), rel=1e-12)
    resumed = torch.load(split / "checkpoint.pt", weights_only=True)
    assert resumed["best_valid_loss"] == pytest.approx(min(stage_two_losses), rel=1e-12)
    # the plateau schedule restarted at the switch: no rate cut on the first, far larger stage-two loss
    assert float(rows_a[2]["lr"]) == float(rows_a[3]["lr"]) or float(rows_a[3]["valid_loss"]) >= float(rows_a[2]["valid_loss"])
    with pytest.raises(ValueError, match="stage_two_epoch"):
        config(small_train_file, tmp_path / "bad", max_epochs=4, stage_two_epoch=-1)


def test_checkpoint_from_before_an_option_existed_resumes_at_its_default(tmp_path, small_train_file):
    """A checkpoint written before an option was added lacks its key: the run used the behaviour the
    option's default keeps, so resuming with the default works and a different value is refused."""
    output = tmp_path / "run"
    train(config(small_train_file, output, max_epochs=1))
    path = output / "checkpoint.pt"
    old = torch.load(path, weights_only=True)
    del old["config"]["stage_two_energy_weight"]
    torch.save(old, path)
    with pytest.raises(ValueError, match=r"stage_two_energy_weight: 1000\.0 → 5\.0"):
        Trainer(config(small_train_file, output, max_epochs=2, resume=True, stage_two_energy_weight=5.0))
    assert Trainer(config(small_train_file, output, max_epochs=2, resume=True), log=lambda m: None).fit()["epochs"] == 2


def test_early_stopping_in_stage_one_starts_stage_two_instead_of_ending(tmp_path, small_train_file):
    """With a vanishing learning rate nothing improves after epoch 1: patience 2 ends stage one after
    epoch 3 (not the run), stage two gets its own patience, and only then does the run stop."""
    log = []
    trainer = Trainer(config(small_train_file, tmp_path, max_epochs=20, lr=1e-300, min_lr=1e-300, early_stopping_patience=2,
                             stage_two_epoch=15, stage_two_energy_weight=1e4), log=log.append)
    assert trainer.fit()["epochs"] == 6 and trainer.stage_two_start == 3
    assert any("stage two starts now" in line for line in log)
    losses = [float(row["valid_loss"]) for row in metrics(tmp_path)]
    assert losses[0] == losses[1] == losses[2] != losses[3] == losses[4] == losses[5]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["stage_two_start"] == 3


def test_run_folder_holds_log_config_splits_and_plot(tmp_path, small_train_file):
    """What a MACE user expects in a run folder; the split names the frames of the file exactly."""
    import json

    import yaml

    output = tmp_path / "run"
    Trainer(config(small_train_file, output, max_epochs=2)).fit()
    log = (output / "train.log").read_text().splitlines()
    assert log[0].split("  ", 1)[1].startswith("Data: 20 training, 4 validation")
    assert all(line[:4].isdigit() and line[10] == " " for line in log)  # "2026-12-02 16:03:12  ..."
    assert any("epoch    2" in line or "epoch 2" in line for line in log)
    assert yaml.safe_load((output / "config.yaml").read_text())["lr"] == 5e-3
    splits = json.loads((output / "splits.json").read_text())
    assert sorted(splits["train"]["frames"] + splits["valid"]["frames"]) == list(range(24))
    frames = ase.io.read(small_train_file, ":")
    data_energies = [f.get_potential_energy() for f in frames]
    trainer_energies = sorted(s.energy for s in Trainer(config(small_train_file, tmp_path / "again")).data.train.structures)
    assert sorted(data_energies[i] for i in splits["train"]["frames"]) == trainer_energies
    assert (output / "training.png").stat().st_size > 1000
    resumed = Trainer(config(small_train_file, output, max_epochs=3, resume=True))
    resumed.fit()
    assert len((output / "train.log").read_text().splitlines()) > len(log)  # appended, not replaced


def test_overwrite_replaces_a_run(tmp_path, small_train_file):
    output = tmp_path / "run"
    Trainer(config(small_train_file, output, max_epochs=1)).fit()
    with pytest.raises(ValueError, match="--overwrite"):
        Trainer(config(small_train_file, output, max_epochs=1))
    Trainer(config(small_train_file, output, max_epochs=1, overwrite=True, seed=4)).fit()
    assert (output / "train.log").read_text().count("Data: ") == 1
    with pytest.raises(ValueError, match="exclude each other"):
        config(small_train_file, output, resume=True, overwrite=True)


SMALL_FAMILIES = {
    "schnet": {"num_features": 8, "num_interactions": 2},
    "painn": {"num_features": 8, "num_interactions": 2},
    "egnn": {"num_features": 8, "num_layers": 2},
    "nequip": {"num_features": 4, "lmax": 1, "num_layers": 2},
    "mace": {"num_channels": 4, "max_L": 1, "lmax": 2, "correlation": 2, "num_layers": 2},
    "allegro": {"num_tensor_features": 4, "latent_features": 16, "latent_hidden": 16, "edge_hidden": 8},
}


@pytest.mark.parametrize("family", sorted(SMALL_FAMILIES))
def test_every_family_trains(tmp_path, small_train_file, family):
    """Eight epochs on 20 ethanol frames at a constant learning rate lower every family's validation
    loss by a third (same data, seed and schedule)."""
    model = {"family": family, "cutoff": 3.0, "hyper": SMALL_FAMILIES[family]}
    options = {"max_epochs": 8, "model": model, "lr": 2e-2, "scheduler": "none", "ema_decay": None}
    Trainer(config(small_train_file, tmp_path, **options), log=lambda line: None).fit()
    losses = [float(row["valid_loss"]) for row in metrics(tmp_path)]
    assert len(losses) == 8 and min(losses[4:]) < losses[0] / 1.5, losses


def test_energies_come_out_without_an_offset_after_force_dominated_training(tmp_path, ethanol_file):
    """A forces-only loss on one composition leaves the energy's constant free: the model ends with
    whatever constant its training drifted to (hundreds of meV off for this seed). refit_atomic_energies
    shifts E0 so the training-set mean error is zero: the held-out mean signed error becomes small
    against the MAE (the spread), and forces, which the constant cannot touch, are unchanged."""
    import json
    import random

    from eqcalc.inference import predict

    frames = ase.io.read(ethanol_file, ":")
    random.Random(0).shuffle(frames)
    ase.io.write(tmp_path / "train.extxyz", frames[:40])
    held_out = frames[40:]
    runs = {}
    for refit in (False, True):
        output = tmp_path / f"refit_{refit}"
        train(config(tmp_path / "train.extxyz", output, max_epochs=6, valid_count=5, energy_weight=0.0,
                     forces_weight=1000.0, scheduler="cosine", lr=1e-2, warmup_epochs=5, ema_decay=0.99, seed=0,
                     refit_atomic_energies=refit))
        runs[refit] = output / "best_model.pt"

    def errors(model, structures):
        predicted = predict(model, structures)
        signed = np.array([p["energy"] - a.get_potential_energy() for p, a in zip(predicted, structures)])
        return signed.mean(), np.abs(signed).mean(), np.concatenate([p["forces"] for p in predicted])

    me_off, mae_off, forces_off = errors(runs[False], held_out)
    me, mae, forces = errors(runs[True], held_out)
    assert abs(me_off) > 0.8 * mae_off  # without the refit the error is mostly the offset …
    assert abs(me) < 0.25 * mae < mae_off  # … with it the spread is what is left
    np.testing.assert_allclose(forces, forces_off, rtol=0, atol=1e-10)
    trained = json.loads((tmp_path / "refit_True" / "splits.json").read_text())["train"]["frames"]
    me_train, _, _ = errors(runs[True], [frames[k] for k in trained])
    assert abs(me_train) < 1e-9  # least squares over one composition: the training mean error is zero
