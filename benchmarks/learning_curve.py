"""Learning curve on rMD17: test force MAE against the number of training structures N for
NequIP with l_max = 0 (scalars only: an invariant network) and l_max = 1, and SchNet: the
seeds' data-efficiency claim (seed 000, figure 8) on real DFT data.

Every run trains on a seeded subset of N structures of the train file (nested: the N = 50 set
is inside the N = 100 set, …), validates on the same 50 held-out structures and is tested on
all 1000 test structures. Every run gets the same number of optimiser steps (``--steps``,
batch 5, cosine schedule), so the cost per point is equal and the comparison is one of data
efficiency at a fixed compute budget (the large-N points are the least converged).

Finished runs are kept in OUTPUT/results.csv and skipped when the script is run again, so the
curve can be built over several sessions:

    OMP_NUM_THREADS=1 python benchmarks/learning_curve.py --data-dir ../shared/data/rmd17 \\
        --molecule ethanol --output runs/learning_curve [--sizes 50 100 250 500 950] [--steps 6000]

Writes OUTPUT/results.csv, OUTPUT/learning_curve.png (log-log) and OUTPUT/learning_curve.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sweeps import claim_protocol, plot_force_mae, run_sweep, training_minutes, write_report

from eqcalc.train.config import load_config
from eqcalc.train.trainer import Trainer

MODELS = {  # name -> (family, hyper-parameters, learning rate)
    "NequIP l_max=0": ("nequip", {"num_features": 32, "lmax": 0, "num_layers": 4}, 0.01),
    "NequIP l_max=1": ("nequip", {"num_features": 32, "lmax": 1, "num_layers": 4}, 0.01),
    "SchNet": ("schnet", {"num_features": 64, "num_interactions": 3}, 1e-3),
}
BATCH_SIZE = 5
COLUMNS = ["model", "n_train", "epochs", "train_minutes", "test_e_mae_meV", "test_f_mae_meV_A"]


def train_point(name: str, n_train: int, args) -> dict:
    family, hyper, lr = MODELS[name]
    epochs = max(1, math.ceil(args.steps * BATCH_SIZE / n_train))
    output = args.output / f"{name.replace(' ', '_').replace('=', '')}_N{n_train}"
    config = load_config(overrides={
        "train": str(args.data_dir / f"{args.molecule}_train.extxyz"),
        "test": str(args.data_dir / f"{args.molecule}_test.extxyz"),
        "valid_count": 50, "train_count": n_train, "seed": args.seed,
        "model": {"family": family, "cutoff": 5.0, "hyper": hyper}, "dtype": "float32",
        "energy_weight": 10.0, "forces_weight": 1000.0, "batch_size": BATCH_SIZE, "lr": lr,
        "scheduler": "cosine", "warmup_epochs": max(1, epochs // 50), "max_epochs": epochs, "min_lr": lr * 1e-3,
        "ema_decay": 0.99, "early_stopping_patience": None, "output": str(output), "progress": False,
        "resume": (output / "checkpoint.pt").exists(),
    })  # fmt: skip
    summary = Trainer(config, log=lambda message: None).fit()
    errors = summary["test"]["all"]
    return {
        "model": name, "n_train": n_train, "epochs": summary["epochs"],
        "train_minutes": f"{training_minutes(output / 'metrics.csv'):.1f}",
        "test_e_mae_meV": f"{errors['e_total_mae']:.2f}", "test_f_mae_meV_A": f"{errors['f_mae']:.2f}",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--molecule", default="ethanol", choices=["ethanol", "aspirin"])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 250, 500, 950])
    parser.add_argument("--steps", type=int, default=6000, help="optimiser steps per run (batch 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/learning_curve"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    claim_protocol(args.output, {"molecule": args.molecule, "steps": args.steps, "seed": args.seed}, "a learning curve")
    results = run_sweep(args.output, COLUMNS, "model", args.models, args.sizes, lambda name, n: train_point(name, n, args))
    plot_force_mae(results, "model", {name: name for name in MODELS}, args.output / "learning_curve.png",
                   "training structures N", f"rMD17 {args.molecule}: learning curve ({args.steps} steps per point)")
    print(write_report(args.output / "learning_curve.md", f"rMD17 {args.molecule} learning curve", COLUMNS, results))

if __name__ == "__main__":
    main()
