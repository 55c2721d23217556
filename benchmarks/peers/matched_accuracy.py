"""Speed at matched accuracy: eqcalc and the peers trained on the same rMD17 ethanol split with
the same wall-clock budget, then tested and timed through their own ASE calculators.

Inputs are trained models: the peers' from ``train_peers.py`` (its ``results.csv`` rows name the
run folders) and eqcalc's ``best_model.pt`` files from ``eqcalc train``. Every model is

1. tested on the 1000 ethanol test structures by ``peer_test_worker.py`` in its own venv (energy
   MAE per molecule, force MAE per component), the same code path for every package;
2. timed in ASE Velocity Verlet MD (``trained_worker.py``, the protocol of ``md_speed.py``) on
   one ethanol molecule and on a periodic box of 27 ethanol molecules (243 atoms), all models
   alternating (A B C … A B C …, ``--rounds`` times), median ms per step over rounds × repeats.

The table gives accuracy next to speed; the speed-up is peer ms / eqcalc ms for the first eqcalc
model. Run after the trainings, e.g. (30-minute budget, one thread each):

    .venv/bin/python benchmarks/peers/matched_accuracy.py --peer-results runs/matched30/results.csv \\
        --eqcalc "eqcalc mace 32x=runs/matched30/eqcalc-mace-32x" --budget 30 --threads 1
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write
from scipy.spatial.transform import Rotation

from compare import HERE, SYSTEMS, checked_arguments, markdown_table, publish, run_context, run_worker, summary, timing_parser, versions_line
from worker_timing import MD_TIMESTEP_FS

DATA = HERE.parents[1].parent / "shared" / "data" / "rmd17"
PEER_MODEL_FILES = {"mace": Path("mace") / "mace.model", "nequip": Path("nequip") / "best.ckpt"}


def ethanol_box(molecule: Atoms, per_axis: int = 3, spacing: float = 4.7, seed: int = 0) -> Atoms:
    """``per_axis``³ randomly rotated copies of ``molecule`` on a cubic grid (``spacing`` Å;
    4.7 Å gives 0.74 g/cm³, liquid ethanol is 0.79), periodic; orientations are redrawn
    until no two atoms of different molecules are closer than 1.8 Å."""
    rng = np.random.default_rng(seed)
    centred = molecule.positions - molecule.positions.mean(axis=0)
    length = per_axis * spacing
    box = Atoms(cell=[length] * 3, pbc=True)
    for index in np.ndindex(per_axis, per_axis, per_axis):
        for _ in range(1000):
            candidate = Atoms(molecule.numbers, centred @ Rotation.random(random_state=rng).as_matrix().T
                              + spacing * (np.array(index) + 0.5))  # fmt: skip
            trial = box + candidate
            if len(box) == 0 or trial.get_all_distances(mic=True)[len(box):, : len(box)].min() > 1.8:
                box = trial
                break
        else:
            raise RuntimeError("could not place a molecule without close contacts; raise the spacing")
    return box


def trained_models(args) -> dict[str, dict]:
    """name -> {package, file, budget row} of every model to compare (eqcalc ones first)."""
    models = {}
    for spec in args.eqcalc:
        name, _, folder = spec.partition("=")
        models[name] = {"package": "eqcalc", "file": str(Path(folder).resolve() / "best_model.pt"), "run": folder}
    with open(args.peer_results, newline="") as handle:
        for row in csv.DictReader(handle):
            if float(row["minutes_budget"]) != args.budget:
                continue
            name = f"{row['peer']} {row['size']}"
            models[name] = {"package": row["peer"], "file": str(Path(row["run"]) / PEER_MODEL_FILES[row["peer"]]),
                            "run": row["run"], "epochs": row["epochs"]}  # fmt: skip
    for model in models.values():
        if not Path(model["file"]).exists():
            raise FileNotFoundError(f"no trained model at {model['file']}: train it first (see the docstring).")
    return models


def python_of(package: str, args) -> str:
    return sys.executable if package == "eqcalc" else str(args.venvs / package / "bin" / "python")


def test_errors(model: dict, args) -> dict:
    command = [python_of(model["package"], args), str(HERE / "peer_test_worker.py"), model["package"], model["file"], str(args.test)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        raise RuntimeError(f"testing {model['file']} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_models(models: dict[str, dict], structure: Path, args) -> dict[str, list[float]]:
    """Alternating MD timing rounds; name -> all per-step times (ms)."""
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            command = [
                python_of(model["package"], args), str(HERE / "trained_worker.py"),
                "--model", json.dumps({"package": model["package"], "file": model["file"]}),
                "--structure", str(structure), "--dtype", "float32", "--repeats", str(args.repeats),
                "--warmup", str(args.warmup), "--threads", str(args.threads), "--seed", str(args.seed),
                "--skin", str(args.skin), "--workdir", str(args.scratch), "--mode", "md",
                *(["--compile"] if model["package"] in args.compile else []),
            ]  # fmt: skip
            report = run_worker(command, args.threads, args.timeout, args.scratch)
            times[name] += report["times_ms"]
            model["report"] = report
    return times


def parse_arguments() -> argparse.Namespace:
    parser = timing_parser(__doc__, rounds=3, repeats=20, output_stem="matched_accuracy")
    parser.add_argument("--peer-results", type=Path, required=True, help="results.csv of train_peers.py")
    parser.add_argument("--eqcalc", nargs="+", required=True, help="NAME=RUN_FOLDER of eqcalc trainings (best_model.pt)")
    parser.add_argument("--budget", type=float, required=True, help="training minutes of the peer rows to compare")
    parser.add_argument("--test", type=Path, default=DATA / "ethanol_test.extxyz", help="test structures")
    parser.set_defaults(threads=1)
    args = parser.parse_args()
    if args.systems != list(SYSTEMS) or args.dtypes != ["float32", "float64"] or args.cutoff != 5.0:
        parser.error("--systems, --dtypes and --cutoff do not apply: the systems are ethanol ones and the "
                     "trained models fix their dtype (float32) and cutoff.")
    return checked_arguments(parser, {"mace", "nequip"}, args)


def main() -> None:
    args = parse_arguments()
    start = time.perf_counter()
    models = trained_models(args)
    for name, model in models.items():
        model["errors"] = test_errors(model, args)
        print(f"{name}: {model['errors']}", file=sys.stderr)
    molecule = read(args.test, index=0)
    molecule.info, molecule.arrays = {}, {k: v for k, v in molecule.arrays.items() if k in ("numbers", "positions")}
    systems = {"ethanol (9)": molecule, "27 ethanol, periodic (243)": ethanol_box(molecule)}
    timings = {}
    with tempfile.TemporaryDirectory(prefix="eqcalc-matched-") as scratch:
        args.scratch = Path(scratch)
        for label, atoms in systems.items():
            path = args.scratch / f"{len(atoms)}.extxyz"
            write(path, atoms, format="extxyz")
            timings[label] = time_models(models, path, args)
    reference = next(iter(models))
    rows = []
    for name, model in models.items():
        errors = model["errors"]
        row = [name, f"{errors['params']:,}", f"{errors['energy_mae_mev']:.2f}", f"{errors['forces_mae_mev']:.2f}"]
        for label, atoms in systems.items():
            ms = statistics.median(timings[label][name])
            ratio = ms / statistics.median(timings[label][reference])
            row += [summary(timings[label][name]), f"{len(atoms) * 1e3 / ms:,.0f}", f"{ratio:.2f}"]
        rows.append(row)
    columns = ["model", "params", "test E MAE (meV/mol)", "test F MAE (meV/Å)"]
    for label in systems:
        columns += [f"{label} ms/step", "atom-steps/s", f"÷ {reference}"]
    packages = {}
    for model in models.values():
        packages.setdefault(model["package"], []).append(model["report"])
    header = "\n".join([
        *run_context(args),
        f"- models: trained on rMD17 ethanol (950 train / 50 valid of the train file, eqcalc's split) with a "
        f"{args.budget:g}-minute training budget each, one torch thread; tested on {args.test.name} through each "
        "package's ASE calculator (float32 models)",
        f"- timing: ASE VelocityVerlet, dt {MD_TIMESTEP_FS} fs, masses ×1e4 (atoms move ~0.01 Å per step), {args.rounds} "
        f"alternating rounds × {args.repeats} steps after {args.warmup} warm-up steps; eqcalc skin {args.skin} Å",
        *(versions_line(package, reports) for package, reports in packages.items()),
        f"- ÷ {reference}: this model's ms per step over {reference}'s (> 1: slower than {reference})",
    ])  # fmt: skip
    publish("Speed at matched training budget: rMD17 ethanol", header, markdown_table(columns, rows), args.output, start)


if __name__ == "__main__":
    main()
