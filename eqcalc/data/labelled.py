"""One labelled structure as plain arrays: the unit every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

DEFAULT_CONFIG_TYPE = "Default"


@dataclass
class LabelledStructure:
    """A structure and whichever reference labels it has (None = label missing).

    Attributes:
        numbers: (N,) int64 atomic numbers.
        positions: (N, 3) float64, Å.
        cell: (3, 3) float64 lattice vectors as rows, Å (zeros for a molecule).
        pbc: (3,) bool.
        energy: total energy, eV, or None.
        forces: (N, 3) float64, eV/Å, or None.
        stress: (3, 3) float64, eV/Å³, ASE sign (positive = tensile), or None.
        dipole: (3,) float64 e·Å, or None (molecules).
        polarizability: (3, 3) float64 Å³, or None.
        charge: total charge, e (``info["charge"]``; 0 = neutral).
        config_type: label used to group errors (extxyz ``config_type``).
        info: the frame's other ``Atoms.info`` entries (kept for output files such as
            ``eqcalc eval --predictions``; not used by training).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    dipole: np.ndarray | None = None
    polarizability: np.ndarray | None = None
    charge: float = 0.0
    config_type: str = DEFAULT_CONFIG_TYPE
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        n = len(self.numbers)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(n, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(3)
        if self.energy is not None:
            self.energy = float(self.energy)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(n, 3)
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=np.float64).reshape(3, 3)
        if self.dipole is not None:
            self.dipole = np.asarray(self.dipole, dtype=np.float64).reshape(3)
        if self.polarizability is not None:
            self.polarizability = np.asarray(self.polarizability, dtype=np.float64).reshape(3, 3)
        self.charge = float(self.charge)

    @property
    def num_atoms(self) -> int:
        return len(self.numbers)

    @property
    def has_labels(self) -> bool:
        labels = (self.energy, self.forces, self.stress, self.dipole, self.polarizability)
        return any(label is not None for label in labels)

    def is_isolated_atom(self) -> bool:
        """A single atom without periodic images, or a frame marked as an isolated atom."""
        marked = self.config_type.replace("_", "").lower() == "isolatedatom"
        return self.num_atoms == 1 and (marked or not self.pbc.any())

    def to_atoms(self) -> Atoms:
        """ASE Atoms with the labels attached as a SinglePointCalculator (energy, forces, Voigt stress,
        dipole); the polarisability in ``info["polarizability"]``, a charge in ``info["charge"]``."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        atoms.info.update(self.info)
        atoms.info["config_type"] = self.config_type
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces
        if self.stress is not None:
            results["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        if self.dipole is not None:
            results["dipole"] = self.dipole
        if self.polarizability is not None:
            atoms.info["polarizability"] = self.polarizability
        if self.charge:
            atoms.info["charge"] = self.charge
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms
