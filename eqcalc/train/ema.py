"""Exponential moving average of model weights: θ̄ ← d θ̄ + (1 − d) θ after every step."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """Shadow copies of a model's parameters.

    Args:
        model: the trained model (its parameters are read, never replaced).
        decay: d in (0, 1); the average remembers about 1/(1 − d) steps. During the first
            steps the decay used is min(d, (1 + n)/(10 + n)) after n updates, so a short
            run is not dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    @torch.no_grad()
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model`` (restored on exit)."""
        backup = {name: p.detach().clone() for name, p in model.named_parameters()}
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            for name, p in model.named_parameters():
                p.copy_(backup[name])

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "shadow": {k: v.clone() for k, v in self.shadow.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
