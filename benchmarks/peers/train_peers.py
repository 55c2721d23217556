"""Train a MACE or NequIP model on rMD17 ethanol with eqcalc's split and a wall-clock budget, then test it.

Runs in eqcalc's venv; the peer codes run through their own command lines in their venvs
(benchmarks/peers/.venv/<peer>, made by setup_env.sh), with one torch thread by default:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/train_peers.py --model mace-32x --minutes 118 --epochs E
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/train_peers.py --model mace-64x --minutes 118 --epochs E
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/train_peers.py --model nequip-l1-32x-4L --minutes 118 --epochs E
    # E = minutes · 60 / seconds per epoch, as the smoke run (--minutes 2) prints it; add --resume to continue

Steps, all in OUTPUT/<model>-<minutes>min/:

1. Split: ``train.extxyz`` (950), ``valid.extxyz`` (50), ``test.extxyz`` (1000) with labels under
   ``REF_energy`` (eV) and ``REF_forces`` (eV/Å). The structures are read with
   ``eqcalc.data.readers.read_structures`` and the validation part is held out with
   ``eqcalc.data.splits.random_split(count=50, seed=0)``, exactly as ``eqcalc train
   configs/benchmarks/rmd17_ethanol.yaml`` does (``eqcalc.train.data.load_training_data``).
2. Train with the peer's own trainer (``mace_run_train``; ``nequip-train`` with a generated
   Hydra config) with eqcalc's settings where the code has them: batch 5, lr 0.01, Adam with
   AMSGrad and no weight decay, float32, loss 10·MSE(E/atom) + 1000·MSE(force components),
   gradient-norm clipping 10, EMA 0.99, cutoff 5 Å, per-element E0 from the training data
   (MACE ``--E0s average``, NequIP ``per_atom_energy_mean``; ethanol has one composition, so
   the least-squares fit is degenerate), energy scale = RMS force. With ``--epochs E`` the
   learning rate decays from 0.01 to 1e-5 over E epochs (NequIP: cosine, as eqcalc; MACE has
   no cosine: exponential decay) and training stops after E epochs or at the budget; without
   it both use ReduceLROnPlateau (factor 0.8, patience 50, MACE's default). No warm-up (neither
   peer trainer has one; eqcalc warms up for 5 epochs).
3. Wall-clock budget (``--minutes``): the time counted is training, from the peer's start of
   training (after its data loading and statistics), like eqcalc's ``max_time``.
   NequIP: Lightning's ``Trainer(max_time=...)`` stops it; ``best.ckpt`` (best validation loss,
   EMA weights) and ``last.ckpt`` are kept. MACE has no time limit: it runs under a timeout
   (SIGTERM at the budget); it checkpoints after every epoch whose validation loss improves
   (EMA weights), and a second ``mace_run_train --restart_latest --max_num_epochs <best epoch>``
   call trains nothing and writes that best checkpoint as ``mace.model``. A killed run loses at
   most the epochs since the last improvement; ``--resume`` continues with the budget left
   (MACE from its best checkpoint, NequIP from ``last.ckpt``, both with their optimiser state).
4. Test: the best model on the 1000 test structures through the peer's ASE calculator
   (``peer_test_worker.py``: MACECalculator, NequIPCalculator), energy MAE in meV per molecule
   and force MAE in meV/Å per component; one row is appended to OUTPUT/results.csv and printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ase.io
import yaml
from ase import Atoms

from eqcalc.atomic_io import append_csv_row, atomic_path
from eqcalc.data.readers import read_structures
from eqcalc.data.splits import random_split

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data" / "rmd17"
VENVS = HERE / ".venv"

LR, MIN_LR, BATCH, EMA_DECAY, CLIP = 0.01, 1e-5, 5, 0.99, 10.0
ENERGY_WEIGHT, FORCES_WEIGHT = 10.0, 1000.0
CUTOFF, PLATEAU_FACTOR, PLATEAU_PATIENCE = 5.0, 0.8, 50
POLL_S = 2.0
CSV_FIELDS = (
    "peer", "size", "minutes_budget", "epochs", "params", "energy_mae_mev", "forces_mae_mev",
    "wall_minutes", "train_minutes", "seconds_per_epoch", "run",
)  # fmt: skip


@dataclass(frozen=True)
class PeerModel:
    """A named peer model: which code, and its size options."""

    peer: str
    size: str
    options: dict


MODELS = {
    "mace-32x": PeerModel("mace", "32x0e+32x1o", {"hidden_irreps": "32x0e+32x1o"}),
    "mace-64x": PeerModel("mace", "64x0e+64x1o", {"hidden_irreps": "64x0e+64x1o"}),
    "nequip-l1-32x-4L": PeerModel("nequip", "l1-32x-4L", {"l_max": 1, "num_features": 32, "num_layers": 4}),
}


# ---------------------------------------------------------------- split


def labelled_atoms(structure) -> Atoms:
    """ASE frame of an eqcalc LabelledStructure with its labels under REF_energy / REF_forces."""
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    atoms.info["REF_energy"] = structure.energy
    atoms.arrays["REF_forces"] = structure.forces
    return atoms


def write_frames(path: Path, structures) -> None:
    """Write extxyz atomically."""
    with atomic_path(path) as temp:
        ase.io.write(temp, [labelled_atoms(s) for s in structures], format="extxyz")


def write_split(run: Path, train_file: Path, test_file: Path, valid_count: int, seed: int) -> dict[str, int]:
    """train/valid/test extxyz in ``run`` (kept if present); returns the structure counts."""
    paths = {name: run / f"{name}.extxyz" for name in ("train", "valid", "test")}
    if not all(p.is_file() for p in paths.values()):
        train, valid = random_split(read_structures(train_file), count=valid_count, seed=seed)
        for name, structures in (("train", train), ("valid", valid), ("test", read_structures(test_file))):
            write_frames(paths[name], structures)
    return {name: len(ase.io.read(p, index=":")) for name, p in paths.items()}


# ---------------------------------------------------------------- running a peer under a budget


def peer_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    return env


def load_state(run: Path) -> dict:
    path = run / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"train_seconds": 0.0}


def save_state(run: Path, state: dict) -> None:
    with atomic_path(run / "state.json") as temp:
        temp.write_text(json.dumps(state))


def run_logged(command: list[str], log: Path, env: dict, started=None, budget_s: float | None = None, run=None, epochs=None):
    """Run ``command`` with output appended to ``log``; returns the return code.

    With ``started`` (a function: has training begun?) and ``budget_s``, the process group gets
    SIGTERM once training has run ``budget_s`` seconds; the training seconds so far are added
    to ``run``/state.json every poll so that a killed driver still knows what was used. With
    ``epochs`` (a function: epochs finished so far), state.json also gets ``seconds_per_epoch``:
    training seconds up to the last finished epoch of this call over the epochs it finished.
    """
    state = load_state(run) if run is not None else None
    used_before = state["train_seconds"] if state else 0.0
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        train_start = None
        first_epochs = epochs() if epochs is not None else 0
        last_epochs = first_epochs
        try:
            while process.poll() is None:
                time.sleep(POLL_S)
                if started is None:
                    continue
                if train_start is None and started():
                    train_start = time.monotonic()
                if train_start is not None:
                    elapsed = time.monotonic() - train_start
                    if state is not None:
                        state["train_seconds"] = used_before + elapsed
                        done = epochs() if epochs is not None else last_epochs
                        if done > last_epochs:
                            last_epochs = done
                            state["seconds_per_epoch"] = elapsed / (done - first_epochs)
                        save_state(run, state)
                    if budget_s is not None and elapsed >= budget_s:
                        os.killpg(process.pid, signal.SIGTERM)
                        process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
    return process.returncode


# ---------------------------------------------------------------- MACE


def mace_command(run: Path, model: PeerModel, epochs: int | None, seed: int, stop_at: int | None = None) -> list[str]:
    """mace_run_train's command line; ``stop_at`` overrides the last epoch (the schedule keeps ``epochs``)."""
    work = run / "mace"
    options = {
        "name": "mace",
        "seed": seed,
        "work_dir": work,
        "model_dir": work,
        "device": "cpu",
        "default_dtype": "float32",
        "model": "ScaleShiftMACE",
        "r_max": CUTOFF,
        "num_radial_basis": 8,
        "max_ell": 3,
        "correlation": 3,
        "num_interactions": 2,
        "train_file": run / "train.extxyz",
        "valid_file": run / "valid.extxyz",
        "energy_key": "REF_energy",
        "forces_key": "REF_forces",
        "E0s": "average",
        "scaling": "rms_forces_scaling",
        "loss": "weighted",
        "energy_weight": ENERGY_WEIGHT,
        "forces_weight": FORCES_WEIGHT,
        "batch_size": BATCH,
        "valid_batch_size": BATCH,
        "optimizer": "adam",
        "lr": LR,
        "weight_decay": 0.0,
        "clip_grad": CLIP,
        "ema_decay": EMA_DECAY,
        "max_num_epochs": stop_at if stop_at is not None else epochs if epochs is not None else 100000,
        "patience": 100000,
        "eval_interval": 1,
        "plot": False,
        "error_table": "PerAtomMAE",
        **model.options,
    }
    if epochs is not None:
        options.update(scheduler="ExponentialLR", lr_scheduler_gamma=(MIN_LR / LR) ** (1.0 / epochs))
    else:
        options.update(scheduler="ReduceLROnPlateau", lr_factor=PLATEAU_FACTOR, scheduler_patience=PLATEAU_PATIENCE)
    command = [str(VENVS / "mace" / "bin" / "mace_run_train"), "--amsgrad", "--ema", "--save_cpu"]
    return command + [f"--{key}={value}" for key, value in options.items()]


def mace_log_text(run: Path) -> str:
    logs = sorted((run / "mace" / "logs").glob("*.log")) if (run / "mace" / "logs").is_dir() else []
    return "".join(p.read_text(errors="replace") for p in logs)


def mace_epochs(run: Path) -> int:
    """Epochs trained (validation lines 'Epoch N: ...' in MACE's log)."""
    numbers = [int(n) for n in re.findall(r"Epoch (\d+):", mace_log_text(run))]
    return max(numbers) + 1 if numbers else 0


def mace_best_epoch(run: Path) -> int:
    checkpoints = list((run / "mace" / "checkpoints").glob("*_epoch-*.pt"))
    if not checkpoints:
        raise RuntimeError(f"MACE saved no checkpoint in {run / 'mace' / 'checkpoints'}; see {run / 'train.log'}.")
    return max(int(re.search(r"_epoch-(\d+)", p.name).group(1)) for p in checkpoints)


def train_mace(run: Path, model: PeerModel, budget_s: float, epochs: int | None, seed: int, resume: bool, env) -> Path:
    command = mace_command(run, model, epochs, seed)
    if resume:
        command.append("--restart_latest")
    log_start = len(mace_log_text(run))
    code = run_logged(
        command,
        run / "train.log",
        env,
        lambda: "Started training" in mace_log_text(run)[log_start:],
        budget_s,
        run,
        lambda: mace_epochs(run),
    )
    model_file = run / "mace" / "mace.model"
    if code == 0 and model_file.is_file():
        return model_file  # finished its epochs inside the budget and wrote the model itself
    # killed at the budget: turn the best checkpoint into a model file without training further
    finalize = mace_command(run, model, epochs, seed, stop_at=mace_best_epoch(run)) + ["--restart_latest"]
    code = run_logged(finalize, run / "train.log", env)
    if code != 0 or not model_file.is_file():
        raise RuntimeError(f"mace_run_train could not write {model_file}; see {run / 'train.log'}.")
    return model_file


# ---------------------------------------------------------------- NequIP


def lightning_duration(seconds: float) -> str:
    seconds = max(int(math.ceil(seconds)), 1)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def nequip_config(run: Path, model: PeerModel, budget_s: float, epochs: int | None, seed: int) -> dict:
    types = ["C", "H", "O"]
    identity = {t: t for t in types}
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": BATCH, "num_workers": 0}
    if epochs is not None:
        schedule = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "T_max": epochs, "eta_min": MIN_LR}
        lr_scheduler = {"scheduler": schedule, "interval": "epoch", "frequency": 1}
    else:
        schedule = {
            "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
            "factor": PLATEAU_FACTOR,
            "patience": PLATEAU_PATIENCE,
        }
        lr_scheduler = {"scheduler": schedule, "interval": "epoch", "frequency": 1, "monitor": "val0_epoch/weighted_sum"}
    return {
        "run": ["train"],
        "seed": seed,
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": seed,
            "train_file_path": str(run / "train.extxyz"),
            "val_file_path": str(run / "valid.extxyz"),
            "key_mapping": {"REF_energy": "total_energy", "REF_forces": "forces"},
            "transforms": [
                {
                    "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                    "model_type_names": types,
                    "chemical_species_to_atom_type_map": identity,
                },
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": CUTOFF},
            ],
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": loader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": types},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "max_epochs": epochs if epochs is not None else -1,
            "max_time": lightning_duration(budget_s),
            "check_val_every_n_epoch": 1,
            "gradient_clip_val": CLIP,
            "enable_progress_bar": False,
            "log_every_n_steps": 50,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(run / "nequip"), "name": "csv"},
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "monitor": "val0_epoch/weighted_sum",
                    "dirpath": str(run / "nequip"),
                    "filename": "best",
                    "save_top_k": 1,
                },
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(run / "nequip"),
                    "filename": "latest",
                    "save_top_k": 1,
                    "save_last": True,
                },
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": EMA_DECAY,
            "loss": {
                "_target_": "nequip.train.EnergyForceLoss",
                "per_atom_energy": True,
                "coeffs": {"total_energy": ENERGY_WEIGHT, "forces": FORCES_WEIGHT},
            },
            "val_metrics": {
                "_target_": "nequip.train.EnergyForceMetrics",
                "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0},
            },
            "optimizer": {"_target_": "torch.optim.Adam", "lr": LR, "amsgrad": True},
            "lr_scheduler": lr_scheduler,
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": seed,
                "model_dtype": "float32",
                "type_names": types,
                "r_max": CUTOFF,
                "parity": True,
                "num_bessels": 8,
                "radial_mlp_depth": 2,
                "radial_mlp_width": 64,
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
                **model.options,
            },
        },
    }


def nequip_epochs(run: Path) -> int:
    """Epochs with a validation row in Lightning's CSV log."""
    epochs = set()
    for path in (run / "nequip" / "csv").glob("version_*/metrics.csv"):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("val0_epoch/weighted_sum"):
                    epochs.add(int(row["epoch"]))
    return len(epochs)


def train_nequip(run: Path, model: PeerModel, budget_s: float, epochs: int | None, seed: int, resume: bool, env) -> Path:
    config_path = run / "nequip_config.yaml"
    last = run / "nequip" / "last.ckpt"
    if not (resume and config_path.is_file()):
        config_path.write_text(yaml.safe_dump(nequip_config(run, model, budget_s, epochs, seed), sort_keys=False))
    command = [
        str(VENVS / "nequip" / "bin" / "nequip-train"),
        "-cp", str(run), "-cn", config_path.stem, f"hydra.run.dir={run / 'nequip' / 'hydra'}",
    ]  # fmt: skip
    if resume and last.is_file():
        command.append(f"++ckpt_path={last}")  # Lightning restores optimiser, EMA and its Timer (time used)
    log = run / "train.log"
    log_start = log.stat().st_size if log.is_file() else 0

    def started() -> bool:
        with open(log, errors="replace") as handle:
            handle.seek(log_start)
            return "Sanity Checking" in handle.read() or (run / "nequip" / "csv").is_dir()

    # Lightning stops itself at max_time; the timeout here is only a safety net (startup + one slow epoch)
    code = run_logged(command, log, env, started, budget_s + 600.0, run, lambda: nequip_epochs(run))
    best = run / "nequip" / "best.ckpt"
    if not best.is_file():
        raise RuntimeError(f"nequip-train wrote no {best} (exit code {code}); see {log}.")
    return best


# ---------------------------------------------------------------- test and report


def test_model(peer: str, model_file: Path, run: Path, env) -> dict:
    command = [str(VENVS / peer / "bin" / "python"), str(HERE / "peer_test_worker.py"), peer, str(model_file)]
    result = subprocess.run(command + [str(run / "test.extxyz")], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"Testing {model_file} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, choices=sorted(MODELS), help="peer model and size")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget of training, minutes")
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="epochs the learning rate decays over (and at most trained); default: plateau schedule, budget only",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "peers", help="folder of run folders and results.csv")
    parser.add_argument("--train", type=Path, default=DATA / "ethanol_train.extxyz", help="training file (train + valid)")
    parser.add_argument("--test", type=Path, default=DATA / "ethanol_test.extxyz", help="test file")
    parser.add_argument("--valid-count", type=int, default=50, help="structures held out of --train for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (as eqcalc's) and of the peer")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of the peer")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run with the budget left")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    for path in (args.train, args.test):
        if not path.is_file():
            parser.error(f"data file {path} does not exist; pass --train/--test (rMD17 ethanol extxyz)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    model = MODELS[args.model]
    if not (VENVS / model.peer / "bin" / "python").is_file():
        raise SystemExit(f"No {model.peer} venv at {VENVS / model.peer}; run: bash benchmarks/peers/setup_env.sh {model.peer}")
    run = (args.output / f"{args.model}-{args.minutes:g}min").resolve()
    if run.exists() and not args.resume and any((run / d).exists() for d in ("mace", "nequip")):
        raise SystemExit(f"{run} holds a previous run: add --resume to continue it, or remove it / pick another --output.")
    run.mkdir(parents=True, exist_ok=True)
    counts = write_split(run, args.train, args.test, args.valid_count, args.seed)
    print(f"split in {run}: {counts}", flush=True)

    env = peer_env(args.threads)
    wall_start = time.monotonic()
    budget_left = args.minutes * 60.0 - (load_state(run)["train_seconds"] if args.resume else 0.0)
    if not args.resume:
        save_state(run, {"train_seconds": 0.0})
    trainer = train_mace if model.peer == "mace" else train_nequip
    model_file = trainer(run, model, max(budget_left, 1.0), args.epochs, args.seed, args.resume, env)
    wall_minutes = (time.monotonic() - wall_start) / 60.0
    epochs = mace_epochs(run) if model.peer == "mace" else nequip_epochs(run)
    state = load_state(run)
    train_seconds = state["train_seconds"]

    errors = test_model(model.peer, model_file, run, env)
    row = {
        "peer": model.peer,
        "size": model.size,
        "minutes_budget": f"{args.minutes:g}",
        "epochs": epochs,
        "params": errors["params"],
        "energy_mae_mev": f"{errors['energy_mae_mev']:.3f}",
        "forces_mae_mev": f"{errors['forces_mae_mev']:.3f}",
        "wall_minutes": f"{wall_minutes:.2f}",
        "train_minutes": f"{train_seconds / 60.0:.2f}",
        "seconds_per_epoch": f"{state['seconds_per_epoch']:.1f}" if "seconds_per_epoch" in state else "",
        "run": str(run),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    append_csv_row(args.output / "results.csv", CSV_FIELDS, row)
    print(",".join(CSV_FIELDS))
    print(",".join(str(row[k]) for k in CSV_FIELDS), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
