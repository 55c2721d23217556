"""Symmetry and physics audit of a saved model on some structures (``eqcalc check``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

try:  # ASE ≥ 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ASE: same signature
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

from ..calculator import EquivariantCalculator, has_stress
from ..models.base import AtomisticModel
from . import physics

# Pass/fail bounds by the dtype the model runs in. Finite-difference checks always use a
# float64 copy of the model: they test that forces and stress are the exact derivatives.
# float32: a force is a sum over ~100 neighbour terms of ~1 eV/Å each, so its round-off, and that
# of its rotated copy, reaches ~1e-5 eV/Å in a dense cell; 5e-5 leaves room for it while a real
# symmetry breaking (an energy term in one direction) is orders of magnitude larger.
SYMMETRY_TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}
FD_TOLERANCE = 1e-6
# ... relative to the largest reference value, or to these where it is smaller (zero forces and
# stress of a relaxed crystal are then compared in absolute terms)
FD_FORCE_FLOOR = 1.0  # eV/Å
FD_STRESS_FLOOR = 0.01  # eV/Å³
# Velocity Verlet at 0.5 fs: the shadow-Hamiltonian error of a smooth potential is O(dt²),
# ~1e-5 eV/atom for molecular vibrations; rounding adds ~1e-6 eV/atom per 100 steps in float32.
NVE_TOLERANCE = {torch.float64: 1e-4, torch.float32: 5e-4}


@dataclass
class AuditResult:
    name: str
    num_atoms: int
    energy_change: float  # eV, largest |E(gx) − E(x)| over the random transformations
    force_equivariance: float  # eV/Å
    force_fd: float  # relative to max(|F|, FD_FORCE_FLOOR)
    stress_fd: float | None  # relative to max(|σ|, FD_STRESS_FLOOR), periodic structures only
    nve_deviation: float  # eV/atom, largest |E_tot(t) − E_tot(0)|
    passed: bool


def nve_deviation(model: AtomisticModel, atoms: Atoms, steps: int = 100, timestep_fs: float = 0.5,
                  temperature: float = 300.0, seed: int = 0) -> float:
    """Largest total-energy deviation per atom (eV) along a short Velocity-Verlet run."""
    atoms = atoms.copy()
    atoms.calc = EquivariantCalculator(model)
    thermalize_momenta(atoms, temperature_K=temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    start = atoms.get_total_energy()
    deviation = 0.0
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    for _ in range(steps):
        dynamics.run(1)
        deviation = max(deviation, abs(atoms.get_total_energy() - start))
    return deviation / len(atoms)


def audit_structure(model: AtomisticModel, atoms: Atoms, name: str, num_transforms: int = 100) -> AuditResult:
    """Run every check on one structure; ``model`` is used in its own dtype."""
    reference64 = copy.deepcopy(model).to(torch.float64)
    symmetry = physics.symmetry_errors(model, atoms, num_transforms=num_transforms)
    energy_scale = physics.energy_tolerance_scale(model, atoms)
    force_fd = physics.force_fd_error(reference64, atoms, floor=FD_FORCE_FLOOR)
    stress_fd = physics.stress_fd_error(reference64, atoms, floor=FD_STRESS_FLOOR) if has_stress(atoms) else None
    nve = nve_deviation(model, atoms)
    tolerance = SYMMETRY_TOLERANCE[model.dtype]
    passed = (
        symmetry["energy"] <= tolerance * energy_scale
        and symmetry["forces"] <= tolerance
        and force_fd <= FD_TOLERANCE
        and (stress_fd is None or stress_fd <= FD_TOLERANCE)
        and nve <= NVE_TOLERANCE[model.dtype]
    )
    return AuditResult(name, len(atoms), symmetry["energy"], symmetry["forces"], force_fd, stress_fd, nve, passed)
