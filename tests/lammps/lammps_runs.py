"""Running structures through LAMMPS (tests/lammps/worker.py under mpirun) for the LAMMPS tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, chemical_symbols

import eqcalc
from eqcalc.testing.physics import randomize_energy_offsets

WORKER = Path(__file__).with_name("worker.py")
BIN = Path(sys.executable).parent
SMALL = {
    "schnet": {"num_features": 8, "num_interactions": 2},
    "painn": {"num_features": 8, "num_interactions": 2},
    "egnn": {"num_features": 8, "num_layers": 2},
    "nequip": {"num_features": 4, "lmax": 1, "num_layers": 2},
    "mace": {"num_channels": 4, "max_L": 1, "lmax": 2, "correlation": 2, "num_layers": 2},
    "allegro": {"num_tensor_features": 4, "latent_features": 16, "latent_hidden": 16, "edge_hidden": 8, "num_layers": 2},
}
TIMEOUT = 300  # s: a run that takes longer has hung


def small_model(family: str, cutoff: float = 3.0, dtype=torch.float64):
    """A small random model of ``family`` for H, C, O with non-trivial element energies."""
    torch.manual_seed(0)
    model = eqcalc.build_model(family, species=[1, 6, 8], cutoff=cutoff, **SMALL[family])
    return randomize_energy_offsets(model).to(dtype).eval()


def lammps_cell(atoms: Atoms) -> Atoms:
    """``atoms`` in LAMMPS's frame (cell rows a, b, c lower-triangular: a along x, b in the xy plane),
    wrapped into the cell where periodic."""
    atoms = atoms.copy()
    if atoms.cell.rank == 3:
        lengths_angles = atoms.cell.cellpar()
        atoms.set_cell(lengths_angles, scale_atoms=True)  # ASE's standard form is lower-triangular
        atoms.wrap()
    return atoms


def spec_for(atoms: Atoms, model_path, elements: list[str], **extra) -> dict:
    """The worker's input for ``atoms`` (in LAMMPS's frame) with LAMMPS types in ``elements`` order."""
    symbols = atoms.get_chemical_symbols()
    return {
        "model": str(model_path),
        "elements": elements,
        "types": [elements.index(s) + 1 for s in symbols],
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": atoms.pbc.tolist(),
        "masses": [float(atomic_masses[chemical_symbols.index(e)]) for e in elements],
        **extra,
    }


def run_lammps(cases: list[dict], tmp_path: Path, ranks: int = 1, name: str = "run") -> tuple[list, subprocess.CompletedProcess]:
    """Run the worker on ``cases`` on ``ranks`` MPI ranks: (its output per case, or [] if it wrote
    none, and the finished process)."""
    spec_path, out_path = tmp_path / f"{name}.json", tmp_path / f"{name}.out.json"
    spec_path.write_text(json.dumps(cases))
    out_path.unlink(missing_ok=True)
    process = subprocess.run(
        [str(BIN / "mpirun"), "-np", str(ranks), sys.executable, str(WORKER), str(spec_path), str(out_path)],
        capture_output=True, text=True, timeout=TIMEOUT, env=environment(), cwd=tmp_path,
    )
    out = json.loads(out_path.read_text()) if out_path.exists() else []
    return out, process


def environment() -> dict:
    """The test process's environment, one thread per rank."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def reference(model, atoms: Atoms) -> dict:
    """What EquivariantCalculator gives for ``atoms``: energy, energies, forces, virial (eV, like the worker's)."""
    atoms = atoms.copy()
    atoms.calc = eqcalc.EquivariantCalculator(model)
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        s = atoms.get_stress()  # xx yy zz yz xz xy, positive = tensile; virial = −σ·V
        out["virial"] = -atoms.get_volume() * np.array([s[0], s[1], s[2], s[5], s[4], s[3]])
    return out
