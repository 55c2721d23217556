"""What a training run leaves in its output folder, besides the models and the checkpoint.

    train.log      every message of the run, one timestamped line each, appended across resumes
    config.yaml    the resolved settings (every option, defaults included)
    splits.json    which frames of the data files trained and validated the model (0-based)
    metrics.csv    one row per epoch (written by the trainer)
    training.png   losses and validation MAEs against the epoch
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from ..atomic_io import atomic_path
from ..plotting import new_figure

LOG_NAME = "train.log"
CONFIG_NAME = "config.yaml"
SPLITS_NAME = "splits.json"
PLOT_NAME = "training.png"


class RunLog:
    """Messages to ``echo`` (e.g. print) and, once :meth:`open` names the run folder, to its log
    file (``train.log`` unless named) with a timestamp per line; messages from before are written then."""

    def __init__(self, echo: Callable[[str], Any] = print):
        self.echo = echo
        self._pending: list[str] = []
        self._path: Path | None = None

    def open(self, folder: Path, name: str = LOG_NAME) -> None:
        self._path = Path(folder) / name
        pending, self._pending = self._pending, []
        self._append(pending)

    def __call__(self, message: str) -> None:
        self.echo(message)
        stamp = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
        lines = [f"{stamp}  {line}" for line in str(message).splitlines() or [""]]
        if self._path is None:
            self._pending.extend(lines)
        else:
            self._append(lines)

    def _append(self, lines: list[str]) -> None:
        if lines:
            with open(self._path, "a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")


def write_run_config(folder: Path, settings: dict[str, Any]) -> None:
    """config.yaml: the resolved settings, written atomically."""
    with atomic_path(Path(folder) / CONFIG_NAME) as tmp:
        Path(tmp).write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")


def write_splits(folder: Path, splits: dict[str, Any]) -> None:
    """splits.json: for each set, its file and the 0-based frame indices used from it."""
    with atomic_path(Path(folder) / SPLITS_NAME) as tmp:
        Path(tmp).write_text(json.dumps(splits, indent=1), encoding="utf-8")


def plot_metrics(metrics_csv: Path, output: Path) -> Path | None:
    """training.png from metrics.csv: training and validation loss, and the validation energy and
    force MAEs, against the epoch (log scales). None if there is no row yet or no matplotlib."""
    if not Path(metrics_csv).exists():
        return None
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None

    def column(name: str) -> list[float]:
        return [float(row[name]) if row.get(name) not in (None, "") else math.nan for row in rows]

    epochs = column("epoch")
    fig = new_figure(figsize=(6.4, 6.4))
    if fig is None:
        return None
    loss_axes, mae_axes = fig.subplots(2, 1, sharex=True)
    loss_axes.plot(epochs, column("train_loss"), label="training")
    loss_axes.plot(epochs, column("valid_loss"), label="validation")
    loss_axes.set_yscale("log")
    loss_axes.set_ylabel("loss")
    loss_axes.legend()
    mae_axes.plot(epochs, column("valid_e_mae_meV_atom"), label="energy (meV/atom)")
    mae_axes.plot(epochs, column("valid_f_mae_meV_A"), label="forces (meV/Å)")
    mae_axes.set_yscale("log")
    mae_axes.set_ylabel("validation MAE")
    mae_axes.set_xlabel("epoch")
    mae_axes.legend()
    fig.tight_layout()
    path = Path(output) / PLOT_NAME
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


def remove_run(folder: Path, names: list[str]) -> None:
    """Delete the files of an earlier run named ``names`` from ``folder`` (``--overwrite``)."""
    for name in names:
        try:
            os.remove(Path(folder) / name)
        except FileNotFoundError:
            pass
