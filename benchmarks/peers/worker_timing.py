"""What every peer-comparison worker shares: its command line, thread setup and the timed
MD-like walk. Imports only numpy, torch and ase, so it runs in every venv (eqcalc's, MACE's,
NequIP's).

A worker builds ONE model with random weights, wraps it in its package's ASE calculator,
times it in one of two modes and prints one JSON line to stdout:

    {"times_ms": [...], "energy_eV": float, "num_params": int, "versions": {...}, "notes": str,
     "neighbour_share": float | null}

- ``walk``: ``calc.calculate`` along a random walk (energy, forces, stress for periodic cells);
- ``md``: ASE Velocity Verlet steps (energy and forces, as NVE asks for them; dt 0.5 fs).

``neighbour_share`` is the fraction of the timed wall time the calculator spent on its
neighbour list, for calculators that count it (eqcalc's ``neighbour_seconds``).
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
MD_TIMESTEP_FS = 0.5
# Random weights give forces of eV/Å size that would tear a real-mass system apart within a few
# hundred steps; with masses this much heavier the run stays a gentle MD trajectory (atoms
# drift at STEP_RMS per step, accelerations negligible) while the integrator, the calculator
# calls and the neighbour-list reuse are exactly those of a production MD loop.
MD_MASS_FACTOR = 1e4


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
    parser.add_argument("--mode", choices=["walk", "md"], default="walk", help="random walk of calculate() calls, or Velocity Verlet MD")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model where the package's "
                        "calculator offers it (compiled on the first, untimed warm-up call)")
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

    return time_steps(calc, step, properties, repeats, warmup)


def time_md(calc, atoms, repeats: int, warmup: int, seed: int) -> tuple[list[float], float]:
    """Per-step wall times (ms) of ASE Velocity Verlet (MD_TIMESTEP_FS) and the last energy (eV).

    Masses are scaled by MD_MASS_FACTOR and the velocities drawn so that atoms move
    STEP_RMS per step (see MD_MASS_FACTOR); the calculator is asked for what NVE needs.
    """
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    atoms.set_masses(atoms.get_masses() * MD_MASS_FACTOR)
    rng = np.random.default_rng(seed)
    step_velocity = STEP_RMS / (MD_TIMESTEP_FS * units.fs) / np.sqrt(3)
    atoms.set_momenta(atoms.get_masses()[:, None] * rng.normal(scale=step_velocity, size=atoms.positions.shape))
    dynamics = VelocityVerlet(atoms, timestep=MD_TIMESTEP_FS * units.fs)
    dynamics.run(0)  # the initial force call, outside the timing
    return time_steps(calc, lambda: dynamics.run(1), ["energy", "forces"], repeats, warmup)


def time_steps(calc, step: Callable[[], object], properties: list[str], repeats: int, warmup: int) -> tuple[list[float], float]:
    """Wall times (ms) of ``repeats`` calls of ``step`` after ``warmup`` untimed ones; checks the
    calculator's results are finite and returns them with the last energy (eV). Restarts the
    calculator's neighbour-list clock (if it has one) when the timing starts."""
    for _ in range(warmup):
        step()
    if hasattr(calc, "neighbour_seconds"):
        calc.neighbour_seconds = 0.0
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


def report(times_ms: list[float], energy: float, calc, model: torch.nn.Module, packages: tuple[str, ...], notes: str = "") -> None:
    """Print the worker's one JSON line."""
    neighbour_seconds = getattr(calc, "neighbour_seconds", None)
    result = {
        "times_ms": times_ms,
        "neighbour_share": None if neighbour_seconds is None else 1e3 * neighbour_seconds / sum(times_ms),
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
    timer = time_md if args.mode == "md" else time_walk
    times, energy = timer(calc, atoms, args.repeats, args.warmup, args.seed)
    report(times, energy, calc, model, packages, notes)
