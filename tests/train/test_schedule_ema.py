"""Learning-rate schedules and the weight average."""

import csv
import math
import types
from pathlib import Path

import pytest
import torch

from eqcalc.train.ema import ExponentialMovingAverage
from eqcalc.train.schedule import LearningRateSchedule


def test_warmup_then_cosine_reaches_min_lr():
    schedule = LearningRateSchedule(1e-2, "cosine", max_epochs=12, warmup_epochs=3, min_lr=1e-4)
    rates = [schedule.lr(e) for e in range(12)]
    assert rates[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))
    assert rates[-1] == pytest.approx(1e-4)
    assert rates[7] == pytest.approx(1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + math.cos(math.pi * 4 / 8)))


def test_plateau_reduces_after_patience_and_state_round_trips():
    schedule = LearningRateSchedule(1.0, "plateau", factor=0.5, patience=2, min_lr=0.2)
    for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5]):
        schedule.step(epoch, loss)
    assert schedule.lr(10) == 0.25  # halved after epochs 4 and 7
    copy = LearningRateSchedule(1.0, "plateau", factor=0.5, patience=2, min_lr=0.2)
    copy.load_state_dict(schedule.state_dict())
    for s in (schedule, copy):
        for epoch in range(10, 13):
            s.step(epoch, 2.5)
    assert copy.lr(13) == schedule.lr(13) == 0.2


def test_ema_averages_and_restores_the_live_weights():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ExponentialMovingAverage(model, decay=0.5)
    ema.num_updates = 100  # past the start-up ramp: the decay is 0.5
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    ema.update(model)
    with ema.applied(model):
        torch.testing.assert_close(model.weight, torch.full((1, 2), 0.75))
    torch.testing.assert_close(model.weight, torch.ones(1, 2))


def test_a_time_budget_shapes_the_schedule_however_slow_the_epochs(tmp_path, monkeypatch):
    """Epochs that slow down (1, 2, 4, 8 s of a 15 s budget) still get the whole cosine schedule and the
    energy-heavy stage: positions follow the share of the budget spent (x max_epochs), the run stops
    once it is spent, and a resumed run continues from the recorded time."""
    import ase.io

    from eqcalc.train import trainer as trainer_module
    from eqcalc.train.config import load_config
    from eqcalc.train.trainer import Trainer

    data = tmp_path / "train.extxyz"
    ase.io.write(data, ase.io.read(Path(__file__).parents[1] / "data" / "ethanol_small.extxyz", ":12"))
    clock = {"now": 0.0, "calls": 0, "epochs": iter([1.0, 2.0, 4.0, 8.0])}

    def fake_perf_counter():  # called at the start and at the end of each epoch
        clock["calls"] += 1
        if clock["calls"] % 2 == 0:
            clock["now"] += next(clock["epochs"], 0.0)
        return clock["now"]

    options = {"train": str(data), "valid_count": 2, "batch_size": 5, "output": str(tmp_path / "run"),
               "progress": False, "model": {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8}},
               "lr": 1e-2, "min_lr": 1e-4, "scheduler": "cosine", "max_epochs": 100, "warmup_epochs": 0,
               "stage_two_epoch": 40, "max_time": 15 / 60, "device": "cpu"}
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
    run = Trainer(load_config(overrides=options), log=lambda m: None)
    assert run.fit()["epochs"] == 4  # 1 + 2 + 4 + 8 = 15 s
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    schedule = LearningRateSchedule(1e-2, "cosine", max_epochs=100, min_lr=1e-4)
    spent = [0.0, 1.0, 3.0, 7.0]
    expected = [schedule.lr(max(e, 100 * s / 15)) for e, s in enumerate(spent)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=1e-12)
    assert run.stage_two_start == 3  # position 46.7 ≥ 40 at epoch 3 (by epochs it would be epoch 40)
    clock["epochs"] = iter([15.0])  # resumed with twice the budget: one more 15 s epoch spends it
    resumed = Trainer(load_config(overrides={**options, "max_time": 30 / 60, "resume": True}), log=lambda m: None)
    assert resumed.fit()["epochs"] == 5
    last = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))[-1]
    assert float(last["lr"]) == pytest.approx(schedule.lr(max(4, 100 * 15 / 30)), rel=1e-12)


def test_auto_epochs_fill_the_time_budget_at_the_speed_of_epoch_two(tmp_path, monkeypatch):
    """max_epochs auto with max_time: epoch 1 pays the set-up (5 s), epoch 2 takes 1 s, so a 20 s budget
    plans 2 + 14 = 16 epochs; later epochs of 0.5 s end the run at the plan (13 s spent), stage two
    (auto) starts at position 0.75 · 16 = 12, and a resume with twice the budget re-plans 2 + 34 = 36."""
    import ase.io

    from eqcalc.train import trainer as trainer_module
    from eqcalc.train.config import load_config
    from eqcalc.train.trainer import Trainer

    data = tmp_path / "train.extxyz"
    ase.io.write(data, ase.io.read(Path(__file__).parents[1] / "data" / "ethanol_small.extxyz", ":12"))
    clock = {"now": 0.0, "calls": 0, "epochs": iter([5.0, 1.0])}

    def fake_perf_counter():  # called at the start and at the end of each epoch
        clock["calls"] += 1
        if clock["calls"] % 2 == 0:
            clock["now"] += next(clock["epochs"], 0.5)
        return clock["now"]

    options = {"train": str(data), "valid_count": 2, "output": str(tmp_path / "run"), "progress": False,
               "model": {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1}},
               "warmup_epochs": 0, "max_time": 20 / 60, "device": "cpu"}
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=fake_perf_counter))
    log = []
    run = Trainer(load_config(overrides=options), log=log.append)
    assert run.planned_epochs is None
    assert run.fit()["epochs"] == 16 and run.planned_epochs == 16
    assert any(line.startswith("Schedule: 16 epochs") for line in log)
    assert run.stage_two_start == 12 and run.loss_fn.energy_weight == run.config.stage_two_energy_weight
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    schedule = LearningRateSchedule(1e-2, "cosine", max_epochs=16, min_lr=1e-5)
    spent = [6.0 + 0.5 * (e - 2) for e in range(2, 16)]  # at the start of epochs 2 … 15
    expected = [schedule.lr(max(e, 16 * s / 20)) for e, s in zip(range(2, 16), spent)]
    assert [float(r["lr"]) for r in rows[2:]] == pytest.approx(expected, rel=1e-12)
    resumed = Trainer(load_config(overrides={**options, "max_time": 40 / 60, "resume": True}), log=lambda m: None)
    assert resumed.planned_epochs == 36 and resumed.fit()["epochs"] == 36
