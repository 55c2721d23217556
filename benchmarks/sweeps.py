"""Resumable sweeps over the training-set size N (learning_curve.py, finetune_curve.py).

A sweep trains one point per (variant, N), appends each finished point to OUTPUT/results.csv and
skips it when the script runs again, so a study can be built over several sessions. The protocol
(steps, seed, ...) is recorded in OUTPUT/protocol.json; a run with another protocol is refused.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import header, markdown_table  # noqa: E402

from eqcalc.atomic_io import append_csv_row, atomic_path  # noqa: E402


def read_results(path: Path) -> list[dict]:
    """The rows of a results CSV (none if it does not exist yet)."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def training_minutes(metrics_path: Path) -> float:
    """Training time summed over the epochs of a run's metrics.csv, so a point resumed across
    sessions reports its whole cost."""
    with open(metrics_path, newline="") as handle:
        return sum(float(row["seconds"]) for row in csv.DictReader(handle)) / 60


def claim_protocol(output: Path, protocol: dict, what: str) -> None:
    """Record ``protocol`` in OUTPUT/protocol.json, or refuse (SystemExit) a folder holding another."""
    path = output / "protocol.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != protocol:
            raise SystemExit(f"{output} holds {what} for {recorded}, not {protocol}: choose another --output.")
    else:
        path.write_text(json.dumps(protocol) + "\n")


def run_sweep(output: Path, columns: list[str], key: str, variants: Iterable[str], sizes: Iterable[int],
              train_point: Callable[[str, int], dict]) -> list[dict]:
    """Train every (variant, N) not yet in OUTPUT/results.csv, small N first (the cheap points land
    before a session ends); ``key`` is the column naming the variant. Returns all rows."""
    results_path = output / "results.csv"
    variants = list(variants)
    for n_train in sizes:
        for variant in variants:
            if any(r[key] == variant and int(r["n_train"]) == n_train for r in read_results(results_path)):
                continue
            row = train_point(variant, n_train)
            append_csv_row(results_path, columns, row)
            print(" | ".join(str(row[c]) for c in columns), flush=True)
    return read_results(results_path)


def plot_force_mae(results: list[dict], key: str, labels: dict[str, str], path: Path, xlabel: str, title: str) -> None:
    """Test force MAE against N, log-log, one line per variant (``labels``: variant → legend)."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for variant, label in labels.items():
        points = sorted((int(r["n_train"]), float(r["test_f_mae_meV_A"])) for r in results if r[key] == variant)
        if points:
            axis.loglog(*zip(*points), "o-", label=label)
    axis.set(xlabel=xlabel, ylabel="test force MAE (meV/Å)", title=title)
    axis.grid(True, which="both", lw=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def write_report(path: Path, title: str, columns: list[str], results: list[dict]) -> str:
    """The results as a markdown page with the environment header; returns its text."""
    table = markdown_table(columns, [[r[c] for c in columns] for r in results])
    text = f"# {title}\n\n```\n{header()}\n```\n\n{table}\n"
    path.write_text(text)
    return text
