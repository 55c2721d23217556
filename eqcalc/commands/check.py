"""``eqcalc check MODEL [STRUCTURES...]``: audit a saved model's symmetry and physics."""

from __future__ import annotations

import argparse
from pathlib import Path


HELP = "audit a model: invariance, equivariance, forces/stress vs finite differences, NVE drift"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file written by eqcalc")
    parser.add_argument("structures", nargs="*", help="structure files (any ase.io format); default: bonded molecule and cell of the model's elements, relaxed with the model")
    parser.add_argument("--frames", type=int, default=2, help="frames checked per file (default 2)")
    parser.add_argument("--transforms", type=int, default=100, help="random O(3) elements per structure")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None, help="run the model in this dtype")


def relaxed(model, atoms, fmax: float = 0.1, steps: int = 200):
    """``atoms`` moved towards the nearest minimum of ``model`` (FIRE, positions only)."""
    from ase.optimize import FIRE

    from ..calculator import EquivariantCalculator

    atoms = atoms.copy()
    atoms.calc = EquivariantCalculator(model)
    FIRE(atoms, logfile=None).run(fmax=fmax, steps=steps)
    atoms.calc = None
    return atoms


def run(args: argparse.Namespace) -> int:
    from ..data.readers import read_frames
    from ..models import load_model
    from ..testing.audit import (
        FD_FORCE_FLOOR, FD_STRESS_FLOOR, FD_TOLERANCE, NVE_TOLERANCE, SYMMETRY_TOLERANCE, audit_structure,
    )
    from ..testing.physics import sample_structures

    model = load_model(args.model, dtype=args.dtype)
    if args.structures:
        structures = [
            (f"{Path(path).name}@{k}", atoms)
            for path in args.structures
            for k, atoms in enumerate(read_frames(path, f":{args.frames}"))
        ]
    else:  # the model's own local minima near bonded sample structures: in its data's range
        structures = [(name, relaxed(model, atoms)) for name, atoms in sample_structures(model.species).items()]
    dtype = str(model.dtype).removeprefix("torch.")
    print(f"model {args.model}: {model.family}, {dtype}, species {model.species}, cutoff {model.cutoff} Å")
    print(
        f"tolerances: symmetry {SYMMETRY_TOLERANCE[model.dtype]:.0e} (eV, eV/Å), finite differences "
        f"{FD_TOLERANCE:.0e} relative to max(|F|, {FD_FORCE_FLOOR:g} eV/Å) and max(|σ|, {FD_STRESS_FLOOR:g} eV/Å³) "
        f"(float64 copy), NVE {NVE_TOLERANCE[model.dtype]:.0e} eV/atom "
        "(100 steps of 0.5 fs from 300 K)"
    )
    header = f"{'structure':<28}{'atoms':>6}{'max |ΔE| eV':>13}{'F equiv eV/Å':>14}{'F vs FD':>10}{'σ vs FD':>10}{'NVE eV/atom':>13}  result"
    print(header)
    failures = 0
    for name, atoms in structures:
        r = audit_structure(model, atoms, name, num_transforms=args.transforms)
        failures += not r.passed
        stress = "-" if r.stress_fd is None else f"{r.stress_fd:.1e}"
        print(
            f"{name[-28:]:<28}{r.num_atoms:>6}{r.energy_change:>13.1e}{r.force_equivariance:>14.1e}"
            f"{r.force_fd:>10.1e}{stress:>10}{r.nve_deviation:>13.1e}  {'PASS' if r.passed else 'FAIL'}"
        )
    print(f"{len(structures) - failures} passed, {failures} failed")
    return 1 if failures else 0
