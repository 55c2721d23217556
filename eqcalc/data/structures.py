"""Built-in structures for demos, checks and benchmarks (no external files needed)."""

from __future__ import annotations

from importlib import resources

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.io import read

WATER_OH = 0.9572  # Å, TIP3P geometry
WATER_HOH = np.deg2rad(104.52)


def aspirin() -> Atoms:
    """Aspirin, 21 atoms: the first rMD17 test frame (CC0), no cell."""
    with resources.as_file(resources.files("eqcalc.assets") / "aspirin.xyz") as path:
        return read(path, format="extxyz")


def water_box(repeat: int | tuple[int, int, int] = 1, seed: int = 0) -> Atoms:
    """Liquid-density water: 64 randomly oriented H₂O on a 4×4×4 grid in a 12.42 Å cubic
    box (1.0 g/cm³, 192 atoms), periodic, then repeated ``repeat`` times."""
    rng = np.random.default_rng(seed)
    length = 12.42
    grid = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * (length / 4)
    local = np.array(
        [[0.0, 0.0, 0.0], [WATER_OH, 0.0, 0.0], [WATER_OH * np.cos(WATER_HOH), WATER_OH * np.sin(WATER_HOH), 0.0]]
    )
    positions = []
    for oxygen in grid:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        positions.append(oxygen + local @ (q * np.sign(np.diag(r))).T)
    atoms = Atoms("OH2" * len(grid), positions=np.concatenate(positions), cell=[length] * 3, pbc=True)
    return atoms.repeat(repeat)


def copper_fcc(repeat: int = 4) -> Atoms:
    """fcc Cu (a = 3.61 Å), conventional cubic cell repeated ``repeat``³ times (256 atoms for 4)."""
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
