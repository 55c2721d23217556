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
import math
from pathlib import Path

from sweeps import claim_protocol, plot_force_mae, run_sweep, training_minutes, write_report

from eqcalc.models.io import read_model_file
from eqcalc.train.config import load_config
from eqcalc.train.trainer import Trainer

BATCH_SIZE = 5
MODES = ("fine-tuned", "scratch")
COLUMNS = ["start", "n_train", "epochs", "train_minutes", "test_e_mae_meV", "test_f_mae_meV_A"]


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
    minutes = training_minutes(output / "metrics.csv")
    return {
        "start": mode, "n_train": n_train, "epochs": summary["epochs"], "train_minutes": f"{minutes:.1f}",
        "test_e_mae_meV": f"{errors['e_total_mae']:.2f}", "test_f_mae_meV_A": f"{errors['f_mae']:.2f}",
    }


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
    claim_protocol(args.output, {"base": str(args.base), "steps": args.steps, "seed": args.seed, "lr_ft": args.lr_ft,
                                 "lr_scratch": args.lr_scratch}, "a study")
    results = run_sweep(args.output, COLUMNS, "start", MODES, args.sizes, lambda mode, n: train_point(mode, n, args))
    plot_force_mae(results, "start", {mode: f"MACE, {mode}" for mode in MODES}, args.output / "finetune_curve.png",
                   "AcAc training structures N",
                   f"AcAc 300 K: fine-tuned from rMD17 ethanol\nvs from scratch, {args.steps} steps of batch 5 each")
    print(write_report(args.output / "finetune_curve.md", "Fine-tuning vs scratch on AcAc 300 K", COLUMNS, results))

if __name__ == "__main__":
    main()
