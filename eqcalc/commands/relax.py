"""``eqcalc relax``: geometry (and cell) optimisation with ASE optimisers."""

from __future__ import annotations

import argparse

from .md import read_structure

HELP = "relax atomic positions (and with --cell the cell) with BFGS, LBFGS or FIRE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--structure", help="any file ase.io.read reads (default: the bundled molecule)")
    parser.add_argument("--cell", action="store_true", help="also relax the cell (FrechetCellFilter)")
    parser.add_argument("--pressure", type=float, default=0.0, help="external pressure with --cell, GPa (default 0)")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence threshold, eV/Å (default 0.05)")
    parser.add_argument("--optimizer", default="BFGS", choices=["BFGS", "LBFGS", "FIRE"], help="default BFGS")
    parser.add_argument("--steps", type=int, default=500, help="most optimiser steps (default 500)")
    parser.add_argument("--output", default="relax_run", help="folder for relaxed.extxyz and relax_trajectory.extxyz")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier relaxation in --output")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="run the model in this precision")


def run(args: argparse.Namespace) -> int:
    from ..md import relax
    from ..md.defaults import DEFAULT_MODEL, DEFAULT_STRUCTURE, bundled_asset

    model = args.model or bundled_asset(DEFAULT_MODEL)
    atoms = read_structure(args.structure or bundled_asset(DEFAULT_STRUCTURE))
    result = relax(
        atoms, model, fmax=args.fmax, optimizer=args.optimizer, cell=args.cell, pressure=args.pressure,
        steps=args.steps, output=args.output, overwrite=args.overwrite, logfile="-", device=args.device, dtype=args.dtype,
    )
    print(f"{'Converged' if result.converged else 'NOT converged'} after {result.steps} steps")
    print(f"final energy   {result.energy:.6f} eV")
    print(f"max force      {result.max_force:.4g} eV/Å")
    if result.pressure is not None:
        print(f"pressure       {result.pressure:.4g} GPa")
    if result.atoms.pbc.any():
        a, b, c, alpha, beta, gamma = result.atoms.cell.cellpar()
        print(f"cell lengths   a {a:.5f}  b {b:.5f}  c {c:.5f} Å")
        print(f"cell angles    α {alpha:.3f}  β {beta:.3f}  γ {gamma:.3f}°")
        print(f"volume         {result.atoms.get_volume():.4f} Å³ ({result.atoms.get_volume() / len(result.atoms):.4f} per atom)")
        for name, vector in zip("abc", result.atoms.cell.array):
            print(f"lattice {name}      {vector[0]:12.6f} {vector[1]:12.6f} {vector[2]:12.6f}")
    print(f"Wrote {args.output}/relaxed.extxyz and {args.output}/relax_trajectory.extxyz")
    return 0 if result.converged else 1
