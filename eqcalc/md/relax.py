"""Geometry optimisation with an eqcalc model: ``eqcalc.md.relax(atoms, model, ...)``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.optimize import BFGS, FIRE, LBFGS

from ..calculator import EquivariantCalculator, has_stress
from ..models.base import AtomisticModel

OPTIMIZERS = {"BFGS": BFGS, "LBFGS": LBFGS, "FIRE": FIRE}
STRUCTURE_FILE = "relaxed.extxyz"
TRAJECTORY_FILE = "relax_trajectory.extxyz"


@dataclass
class RelaxResult:
    """Outcome of a relaxation.

    Attributes:
        atoms: the relaxed structure (energy, forces and, for periodic cells, stress attached).
        converged: whether the largest force (and, with ``cell``, stress component × volume) fell below fmax.
        steps: optimiser steps taken.
        energy: final potential energy, eV.
        max_force: largest atomic force norm, eV/Å.
        pressure: −trace(σ)/3 in GPa for periodic cells, else None.
        output: folder holding relaxed.extxyz and relax_trajectory.extxyz, or None.
    """

    atoms: Atoms
    converged: bool
    steps: int
    energy: float
    max_force: float
    pressure: float | None
    output: Path | None


def relax(
    atoms: Atoms,
    model: AtomisticModel | str | os.PathLike,
    *,
    fmax: float = 0.05,
    optimizer: str = "BFGS",
    cell: bool = False,
    pressure: float = 0.0,
    steps: int = 500,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    logfile: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> RelaxResult:
    """Minimise the energy of ``atoms`` (not modified) with an ASE optimiser.

    Args:
        fmax: convergence threshold on the largest force, eV/Å.
        optimizer: "BFGS", "LBFGS" or "FIRE".
        cell: also relax the cell (ASE's FrechetCellFilter; periodic structures only).
        pressure: external pressure for the cell relaxation, GPa.
        steps: most optimiser steps.
        output: folder for relaxed.extxyz and the optimisation trajectory (relax_trajectory.extxyz).
        overwrite: replace an earlier relaxation in ``output`` (otherwise that is an error).
        logfile: the optimiser's log ("-" for stdout, None for none).

    From 1,000 atoms on, glibc keeps freed memory for reuse in this process (the calculator's
    ``reuse_memory``).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}.")
    if fmax <= 0 or steps < 0:
        raise ValueError(f"fmax must be positive and steps ≥ 0, got fmax={fmax}, steps={steps}.")
    system = atoms.copy()
    system.calc = EquivariantCalculator(model, device=device, dtype=dtype, reuse_memory=True)  # owns the process
    if cell and not has_stress(system):
        raise ValueError(
            f"Cell relaxation needs a periodic cell; this structure has pbc={system.pbc.tolist()} and volume "
            f"{system.cell.volume:.3g} Å³. Drop --cell, or give the structure a periodic cell."
        )
    target = FrechetCellFilter(system, scalar_pressure=pressure * units.GPa) if cell else system
    dynamics = OPTIMIZERS[optimizer](target, logfile=logfile)
    out = Path(output) if output is not None else None
    if out is not None:
        existing = [name for name in (STRUCTURE_FILE, TRAJECTORY_FILE) if (out / name).exists()]
        if existing and not overwrite:
            raise ValueError(
                f"{str(out)!r} already holds a relaxation ({', '.join(existing)}). Choose another --output, "
                "or pass --overwrite (overwrite=True) to replace it."
            )
        out.mkdir(parents=True, exist_ok=True)
        trajectory = out / TRAJECTORY_FILE
        trajectory.unlink(missing_ok=True)
        dynamics.attach(lambda: write(trajectory, _with_results(system), append=True))
    converged = bool(dynamics.run(fmax=fmax, steps=steps))
    relaxed = _with_results(system)
    if out is not None:
        write(out / STRUCTURE_FILE, relaxed)
    stress = relaxed.calc.results.get("stress")
    return RelaxResult(
        atoms=relaxed,
        converged=converged,
        steps=dynamics.nsteps,
        energy=float(relaxed.get_potential_energy()),
        max_force=float(np.linalg.norm(relaxed.get_forces(), axis=1).max(initial=0.0)),
        pressure=None if stress is None else float(-stress[:3].mean() / units.GPa),
        output=out,
    )


def _with_results(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` carrying its current energy, forces and (periodic) stress."""
    copy = atoms.copy()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if has_stress(atoms):
        results["stress"] = atoms.get_stress()
    copy.calc = SinglePointCalculator(copy, **results)
    return copy
