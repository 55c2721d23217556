"""What every peer-comparison worker shares: its command line, thread setup and the timed
MD-like walk. Imports only numpy, torch and ase, so it runs in every venv (eqcalc's, MACE's,
NequIP's).

A worker builds ONE model with random weights, wraps it in its package's ASE calculator,
and prints one JSON line to stdout:

    {"times_ms": [...], "energy_eV": float, "num_params": int, "versions": {...}, "notes": str}
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib import metadata
from typing import Callable

import numpy as np
import torch
from ase.calculators.calculator import all_changes
from ase.io import read

STEP_RMS = 0.01  # Å, rms displacement per step: an MD step, so a Verlet skin list is mostly reused


def parse_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--structure", required=True, help="extxyz file with one structure")
    parser.add_argument("--model", required=True, help="JSON dict of this package's model hyper-parameters")
    parser.add_argument("--dtype", choices=["float32", "float64"], required=True)
    parser.add_argument("--repeats", type=int, required=True, help="timed calls")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the walk")
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å")
    parser.add_argument("--species", type=int, nargs="+", default=[1, 6, 8], help="atomic numbers the model knows")
    parser.add_argument("--skin", type=float, default=0.5, help="Å, Verlet skin (eqcalc only: peers have none)")
    parser.add_argument("--workdir", required=True, help="scratch folder for model files")
    args = parser.parse_args()
    args.model = json.loads(args.model)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def load_structure(path: str):
    return read(path, format="extxyz")


def properties_for(atoms) -> list[str]:
    """energy + forces, plus stress for a periodic structure."""
    return ["energy", "forces"] + (["stress"] if atoms.pbc.any() else [])


def time_walk(calc, atoms, repeats: int, warmup: int, seed: int) -> tuple[list[float], float]:
    """Per-call wall times (ms) of ``calc.calculate`` along a random walk (STEP_RMS per step,
    the same walk for every worker with the same seed), and the last energy (eV).

    ``all_changes`` is passed so no calculator can serve a cached result.
    """
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    properties = properties_for(atoms)

    def step() -> None:
        atoms.positions += rng.normal(scale=STEP_RMS / np.sqrt(3), size=atoms.positions.shape)
        calc.calculate(atoms, properties, all_changes)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    for name in properties:
        if not np.all(np.isfinite(calc.results[name])):
            raise RuntimeError(f"non-finite {name} from {type(calc).__name__}: the worker's model is broken.")
    return times, float(calc.results["energy"])


def versions(*packages: str) -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "numpy", "ase", "e3nn", *packages)}


def report(times_ms: list[float], energy: float, model: torch.nn.Module, packages: tuple[str, ...], notes: str = "") -> None:
    """Print the worker's one JSON line."""
    result = {
        "times_ms": times_ms,
        "energy_eV": energy,
        "num_params": sum(p.numel() for p in model.parameters()),
        "versions": versions(*packages),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "notes": notes,
    }
    print(json.dumps(result), flush=True)


def run(build: Callable[[argparse.Namespace, object], tuple[object, torch.nn.Module, str]], packages: tuple[str, ...], description: str) -> None:
    """Worker main: ``build(args, atoms) -> (ase calculator, torch model, notes)``, then time and report."""
    args = parse_arguments(description)
    atoms = load_structure(args.structure)
    calc, model, notes = build(args, atoms)
    times, energy = time_walk(calc, atoms, args.repeats, args.warmup, args.seed)
    report(times, energy, model, packages, notes)
