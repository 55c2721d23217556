"""rMD17 protocol: train on 950 configurations of the train file (50 more for validation),
report the energy MAE (meV per molecule) and force MAE (meV/Å per component) on the 1000
test configurations, next to the published numbers (MACE paper, NeurIPS 2022, Table 1).

    python benchmarks/train_rmd17.py --data-dir /path/to/rmd17 --molecule ethanol --family schnet \
        --max-epochs 500 --output runs/rmd17_ethanol [--hyper '{num_features: 128}'] [--device cuda]

The data folder holds {molecule}_train.extxyz and {molecule}_test.extxyz (1000 frames each).
Long run: hours on a GPU for the published accuracy; do not run it on a shared CPU machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from eqcalc.data.dataset import GraphDataset
from eqcalc.data.readers import read_structures
from eqcalc.models.io import load_model
from eqcalc.train.config import load_config
from eqcalc.train.distributed import resolve_device
from eqcalc.train.evaluate import grouped_errors, predict
from eqcalc.train.trainer import BEST_MODEL_NAME, Trainer

PUBLISHED = {  # meV per molecule, meV/Å
    "aspirin": {"MACE": (2.2, 6.6), "NequIP": (2.3, 8.2), "PaiNN": (6.9, 16.1)},
    "ethanol": {"MACE": (0.4, 2.1), "NequIP": (0.4, 2.8), "PaiNN": (2.7, 10.0)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--molecule", default="ethanol", choices=sorted(PUBLISHED))
    parser.add_argument("--family", default="schnet")
    parser.add_argument("--hyper", default="{}", help="YAML mapping of model hyper-parameters")
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=Path("runs/rmd17"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    train_file = args.data_dir / f"{args.molecule}_train.extxyz"
    test_file = args.data_dir / f"{args.molecule}_test.extxyz"
    options = {
        "train": str(train_file),
        "valid_count": 50,
        "model": {"family": args.family, "cutoff": args.cutoff, "hyper": yaml.safe_load(args.hyper)},
        "energy_weight": 1.0,
        "forces_weight": 1000.0,
        "batch_size": args.batch_size,
        "max_epochs": args.max_epochs,
        "lr": args.lr,
        "scheduler": "plateau",
        "plateau_factor": 0.8,
        "plateau_patience": 50,
        "ema_decay": 0.99,
        "early_stopping_patience": 200,
        "device": args.device,
        "output": str(args.output),
        "resume": args.resume,
    }
    config = load_config(overrides=options)
    Trainer(config).fit()

    device = resolve_device(config.device)
    model = load_model(args.output / BEST_MODEL_NAME, device=device)
    test = GraphDataset(read_structures(test_file), model.cutoff)
    errors = grouped_errors(test, predict(model, test, device=device))["all"]
    print(f"\nrMD17 {args.molecule}, {len(test)} test configurations, {args.family}:")
    print(f"  energy MAE {errors['e_total_mae']:.2f} meV   force MAE {errors['f_mae']:.2f} meV/Å")
    for name, (e, f) in PUBLISHED[args.molecule].items():
        print(f"  published {name:<7} energy {e:5.1f} meV   forces {f:5.1f} meV/Å")


if __name__ == "__main__":
    main()
