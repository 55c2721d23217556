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
