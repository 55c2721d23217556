"""Fine-tuning against training from scratch: test force MAE on acetylacetone (BOTNet AcAc, 300 K)
against the number of training structures N, for a MACE model trained on rMD17 ethanol that is
fine-tuned (``init_from``) and for the same architecture trained from a fresh initialisation.

Both runs of a point get the same budget: ``--steps`` optimiser steps of batch 5, a cosine
schedule, EMA; the fine-tuned run starts from the base weights at a lower learning rate (``--lr-ft``)
and re-fits the reference energies to the new data. Every run trains on a seeded subset of N
structures of train_300K (nested), validates on 50 other ones and is tested on test_MD_300K.

    OMP_NUM_THREADS=1 python benchmarks/finetune_curve.py --data-dir ../shared/data/acac \\
        --base benchmarks/results/models/rmd17_ethanol_mace32.pt --output runs/finetune_curve

Finished points are kept in OUTPUT/results.csv and skipped when the script is run again.
Writes OUTPUT/results.csv, OUTPUT/finetune_curve.png and OUTPUT/finetune_curve.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import header, markdown_table  # noqa: E402

from eqcalc.atomic_io import append_csv_row, atomic_path  # noqa: E402
from eqcalc.models.io import read_model_file  # noqa: E402
from eqcalc.train.config import load_config  # noqa: E402
from eqcalc.train.trainer import Trainer  # noqa: E402

BATCH_SIZE = 5
MODES = ("fine-tuned", "scratch")
COLUMNS = ["start", "n_train", "epochs", "train_minutes", "test_e_mae_meV", "test_f_mae_meV_A"]


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def train_point(mode: str, n_train: int, args) -> dict:
    epochs = max(1, math.ceil(args.steps * BATCH_SIZE / n_train))
    output = args.output / f"{mode}_N{n_train}"
    if mode == "fine-tuned":
        start = {"init_from": str(args.base), "lr": args.lr_ft}
    else:
        payload = read_model_file(args.base)
        hyper = {k: v for k, v in payload["config"].items() if k not in ("species", "cutoff", "avg_num_neighbors")}
        start = {"model": {"family": payload["family"], "cutoff": payload["config"]["cutoff"], "hyper": hyper},
                 "dtype": payload["dtype"], "lr": args.lr_scratch}
    lr = start["lr"]
    config = load_config(overrides={
        "train": str(args.data_dir / "train_300K.extxyz"), "test": str(args.data_dir / "test_MD_300K.extxyz"),
        "valid_count": 50, "train_count": n_train, "seed": args.seed,
        "energy_weight": 10.0, "forces_weight": 1000.0, "batch_size": BATCH_SIZE,
        "scheduler": "cosine", "warmup_epochs": max(1, epochs // 50), "max_epochs": epochs, "min_lr": lr * 1e-2,
        "ema_decay": 0.99, "early_stopping_patience": None, "output": str(output), "progress": False,
        "resume": (output / "checkpoint.pt").exists(), **start,
    })  # fmt: skip
    summary = Trainer(config, log=lambda message: None).fit()
    errors = summary["test"]["all"]
    with open(output / "metrics.csv", newline="") as handle:
        minutes = sum(float(row["seconds"]) for row in csv.DictReader(handle)) / 60
    return {
        "start": mode, "n_train": n_train, "epochs": summary["epochs"], "train_minutes": f"{minutes:.1f}",
        "test_e_mae_meV": f"{errors['e_total_mae']:.2f}", "test_f_mae_meV_A": f"{errors['f_mae']:.2f}",
    }


def check_same_protocol(args) -> None:
    """Finished points are reused only by a run of the same protocol (OUTPUT/protocol.json)."""
    protocol = {"base": str(args.base), "steps": args.steps, "seed": args.seed, "lr_ft": args.lr_ft,
                "lr_scratch": args.lr_scratch}
    path = args.output / "protocol.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != protocol:
            raise SystemExit(f"{args.output} holds a study for {recorded}, not {protocol}: choose another --output.")
    else:
        path.write_text(json.dumps(protocol) + "\n")


def plot(results: list[dict], path: Path, steps: int) -> None:
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for mode in MODES:
        points = sorted((int(r["n_train"]), float(r["test_f_mae_meV_A"])) for r in results if r["start"] == mode)
        if points:
            axis.loglog(*zip(*points), "o-", label=f"MACE, {mode}")
    axis.set(xlabel="AcAc training structures N", ylabel="test force MAE (meV/Å)",
             title=f"AcAc 300 K: fine-tuned from rMD17 ethanol\nvs from scratch, {steps} steps of batch 5 each")  # fmt: skip
    axis.grid(True, which="both", lw=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with train_300K and test_MD_300K")
    parser.add_argument("--base", type=Path, required=True, help="eqcalc model file trained on rMD17 ethanol")
    parser.add_argument("--sizes", nargs="+", type=int, default=[25, 50, 100, 250])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run (batch 5)")
    parser.add_argument("--lr-ft", type=float, default=2e-3, help="fine-tuning learning rate")
    parser.add_argument("--lr-scratch", type=float, default=1e-2, help="learning rate from scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/finetune_curve"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    check_same_protocol(args)
    results_path = args.output / "results.csv"
    for n_train in args.sizes:
        for mode in MODES:
            if any(r["start"] == mode and int(r["n_train"]) == n_train for r in read_results(results_path)):
                continue
            row = train_point(mode, n_train, args)
            append_csv_row(results_path, COLUMNS, row)
            print(" | ".join(str(row[c]) for c in COLUMNS), flush=True)
    results = read_results(results_path)
    plot(results, args.output / "finetune_curve.png", args.steps)
    table = markdown_table(COLUMNS, [[r[c] for c in COLUMNS] for r in results])
    text = f"# Fine-tuning vs scratch on AcAc 300 K\n\n```\n{header()}\n```\n\n{table}\n"
    (args.output / "finetune_curve.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
