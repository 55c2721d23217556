"""Learning rate per epoch: linear warm-up, then plateau reduction, cosine decay or constant.

The state is plain numbers, so it checkpoints exactly and loads with weights_only=True.
"""

from __future__ import annotations

import math


class LearningRateSchedule:
    """lr(epoch) for ``max_epochs`` epochs.

    Args:
        lr: peak learning rate.
        kind: "plateau" (× factor after ``patience`` epochs without a better validation loss),
            "cosine" (from lr to min_lr over the epochs after warm-up) or "none".
        warmup_epochs: the first epochs ramp linearly, lr · (e + 1)/(warmup_epochs + 1).
        min_lr: floor of the plateau reductions and end of the cosine.
    """

    def __init__(
        self,
        lr: float,
        kind: str = "plateau",
        *,
        max_epochs: int = 1,
        warmup_epochs: int = 0,
        min_lr: float = 0.0,
        factor: float = 0.8,
        patience: int = 10,
    ):
        if kind not in ("plateau", "cosine", "none"):
            raise ValueError(f"scheduler must be 'plateau', 'cosine' or 'none', got {kind!r}.")
        self.base_lr = float(lr)
        self.kind = kind
        self.max_epochs = int(max_epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.min_lr = float(min_lr)
        self.factor = float(factor)
        self.patience = int(patience)
        self.plateau_lr = float(lr)
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, epoch: float) -> float:
        """Learning rate to use during ``epoch`` (0-based; a fractional position in the schedule
        where a time budget drives it)."""
        if epoch < self.warmup_epochs:
            return self.base_lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.kind == "cosine":
            span = max(self.max_epochs - self.warmup_epochs - 1, 1)
            progress = min((epoch - self.warmup_epochs) / span, 1.0)
            return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
        if self.kind == "plateau":
            return self.plateau_lr
        return self.base_lr

    def step(self, epoch: int, valid_loss: float) -> None:
        """Report the validation loss at the end of ``epoch`` (drives the plateau reduction)."""
        if self.kind != "plateau" or epoch < self.warmup_epochs:
            return
        if valid_loss < self.best:
            self.best, self.bad_epochs = valid_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.plateau_lr = max(self.plateau_lr * self.factor, self.min_lr)
            self.bad_epochs = 0

    def restart_plateau(self) -> None:
        """Forget the best loss seen (the loss has been redefined, e.g. at stage two); keep the rate."""
        self.best, self.bad_epochs = math.inf, 0

    def state_dict(self) -> dict:
        return {"plateau_lr": self.plateau_lr, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_lr = float(state["plateau_lr"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
