"""Learning-rate schedules and the weight average."""

import math

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
