"""Checks that stop a simulation which has become unphysical, before it writes garbage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..data.neighbors import neighbour_list


@dataclass
class Guards:
    """Limits on one MD state. Close contacts (``min_distance``) are checked by the calculator,
    which raises ValueError naming the pair; non-finite results make it raise FloatingPointError.

    Attributes:
        max_force: largest allowed force on an atom, eV/Å.
        max_temperature: largest allowed temperature, K.
    """

    max_force: float
    max_temperature: float

    def check(self, energy: float, forces: np.ndarray, temperature: float) -> str | None:
        """A message describing the first violated limit, or None when the state is sound.

        Args:
            energy: potential energy, eV.
            forces: (N, 3) eV/Å.
            temperature: K.
        """
        if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
            return "the potential energy or forces are NaN or infinite"
        norms = np.linalg.norm(forces, axis=1)
        worst = int(np.argmax(norms)) if norms.size else 0
        if norms.size and norms[worst] > self.max_force:
            return (
                f"the force on atom {worst} is {norms[worst]:.3g} eV/Å, above the limit of {self.max_force:g} eV/Å "
                "(atoms colliding, or a structure outside the model's training data)"
            )
        if not temperature <= self.max_temperature:
            return (
                f"the temperature reached {temperature:.4g} K, above the limit of {self.max_temperature:g} K "
                "(energy is not conserved: try a smaller timestep)"
            )
        return None


@dataclass
class UncertaintyGuard:
    """A limit on a committee's disagreement: the largest per-atom force spread (the calculator's
    ``forces_std``, see :mod:`eqcalc.committee`) of one MD state.

    Attributes:
        limit: largest allowed spread, eV/Å.
        action: what the run does with a state above it, "stop" or "save" (see :class:`MDConfig`).
    """

    limit: float
    action: str = "stop"

    def exceeded(self, forces_std: np.ndarray) -> tuple[int, float] | None:
        """The atom with the largest spread and that spread (eV/Å) when it is above the limit, else None.

        Args:
            forces_std: (N,) per-atom force spread, eV/Å.
        """
        if not len(forces_std):
            return None
        worst = int(np.argmax(forces_std))
        spread = float(forces_std[worst])
        return (worst, spread) if spread > self.limit else None

    def message(self, step: int, atom: int, spread: float) -> str:
        """Why a run stops at ``step`` where atom ``atom`` has the spread ``spread`` (eV/Å), and what to do."""
        return (
            f"at step {step} the committee's force spread on atom {atom} is {spread:.3g} eV/Å, above the limit "
            f"of {self.limit:g} eV/Å (max_force_uncertainty): the models disagree, so the structure is outside "
            "their training data. Label such structures and retrain (collect them with --uncertainty-action save, "
            "or pick frames with `eqcalc select`), or raise the limit"
        )


class FragmentGuard:
    """Notices a structure falling apart: two atoms are bonded when closer than ``bond_factor`` ×
    the sum of their covalent radii (ASE's ``covalent_radii``), and the bonded atoms form
    fragments (connected components, periodic images included). A run that ends up with more
    fragments than it started with has broken a bond and lost a piece (a molecule outside the
    model's training data, or too hot).

    Args:
        atoms: the starting structure; its fragment count is the reference.
        bond_factor: bond length limit as a multiple of the covalent radii sum (> 0; 1.3–1.5 keeps
            vibrating bonds bonded and hydrogen bonds unbonded).
    """

    def __init__(self, atoms: Atoms, bond_factor: float):
        self.bond_factor = float(bond_factor)
        self._radii = covalent_radii[atoms.numbers]
        self._search = 2.0 * self.bond_factor * float(self._radii.max()) if len(atoms) else 0.0
        self.start = int(self.fragments(atoms).max(initial=-1)) + 1

    def fragments(self, atoms: Atoms) -> np.ndarray:
        """(N,) int: the fragment of each atom, numbered 0, 1, … by their first atom."""
        edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, self._search)
        i, j = edge_index
        distances = np.linalg.norm(atoms.positions[j] + shifts @ atoms.cell.array - atoms.positions[i], axis=1)
        bonded = distances < self.bond_factor * (self._radii[i] + self._radii[j])
        n = len(atoms)
        graph = coo_matrix((np.ones(int(bonded.sum())), (i[bonded], j[bonded])), shape=(n, n))
        return connected_components(graph, directed=False)[1]

    def check(self, atoms: Atoms) -> str | None:
        """A message naming the atoms of the smallest fragment when there are more fragments than
        at the start, else None."""
        labels = self.fragments(atoms)
        count = int(labels.max(initial=-1)) + 1
        if count <= self.start:
            return None
        sizes = np.bincount(labels)
        smallest = np.flatnonzero(labels == int(np.argmin(sizes)))
        listed = ", ".join(f"{k} ({atoms[k].symbol})" for k in smallest[:5]) + (" …" if len(smallest) > 5 else "")
        return (
            f"the structure fell apart: {count} fragments where it started with {self.start}; atom(s) {listed} "
            f"are no longer bonded to the rest (bonded: closer than {self.bond_factor:g} × the covalent radii). A bond "
            "broke: the structure left the model's training data, or the temperature is too high"
        )
