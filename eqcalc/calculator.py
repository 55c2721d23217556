"""ASE calculator for any eqcalc model: energy, per-atom energies, forces, stress."""

from __future__ import annotations

import copy
import os
import time

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .data.graph import stress_defined, structure_graph
from .data.validation import MIN_DISTANCE, check_min_distance, check_positions
from .data.verlet import VerletNeighbourList
from .models.base import AtomisticModel
from .models.io import load_model, resolve_dtype
from .properties import compute_properties


def has_stress(atoms) -> bool:
    """Whether ``atoms`` has a stress (a periodic direction and a cell of non-zero volume)."""
    return stress_defined(atoms.cell.array, atoms.pbc)


class EquivariantCalculator(Calculator):
    """ASE calculator wrapping an eqcalc model.

    Args:
        model: an :class:`AtomisticModel` (the calculator keeps its own copy, in
            inference mode) or the path of a model file.
        device: torch device to run on ("cpu", "cuda", …).
        dtype: "float32", "float64", or None for the model's own dtype.
        skin: Verlet-list skin in Å; the neighbour list is rebuilt only when an
            atom has moved more than skin/2 or the cell, pbc or numbers change.
        min_distance: atoms closer than this (Å) raise an error instead of giving nonsense.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (Voigt order xx, yy, zz, yz, xz, xy;
    ASE sign: positive = tensile). Per-atom energies are available as "energies".
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: AtomisticModel | str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        skin: float = 0.5,
        min_distance: float = MIN_DISTANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(model, AtomisticModel):
            target = resolve_dtype(dtype) or model.dtype
            model = copy.deepcopy(model).to(device=device, dtype=target)
        else:
            model = load_model(model, device=device, dtype=dtype)
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.min_distance = float(min_distance)
        self.neighbours = VerletNeighbourList(model.cutoff, skin)
        self.neighbour_seconds = 0.0  # wall time spent updating and filtering the neighbour list

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        positions = atoms.positions
        cell = atoms.cell.array
        check_positions(positions, cell)
        want_stress = "stress" in properties
        stress = has_stress(atoms)
        if want_stress and not stress:
            raise PropertyNotImplementedError(
                "Stress needs a periodic cell of non-zero volume; this structure has "
                f"pbc={atoms.pbc.tolist()} and cell volume {atoms.cell.volume:.3g} Å³. "
                "Give it a cell and pbc=True, or don't ask for stress."
            )
        start = time.perf_counter()
        self.neighbours.update(positions, cell, atoms.pbc, atoms.numbers)
        edge_index, shifts = self._edges_within_cutoff(positions, cell)
        self.neighbour_seconds += time.perf_counter() - start
        graph = structure_graph(positions, atoms.numbers, cell, atoms.pbc, edge_index, shifts).to(self.device)
        results = compute_properties(self.model, graph, forces=True, stress=stress)
        energy = float(results["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": results["energies"].detach().cpu().numpy(),
            "forces": results["forces"].detach().cpu().numpy(),
        }
        if stress:
            s = results["stress"][0].detach().cpu().numpy()
            self.results["stress"] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        for key, value in self.results.items():
            if not np.all(np.isfinite(value)):
                raise FloatingPointError(
                    f"The model returned a non-finite {key}. The structure may be far outside the "
                    "training data, or the model file is damaged."
                )

    def _edges_within_cutoff(self, positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edges of the skin list that lie within the cutoff now; checks for overlapping atoms."""
        edge_index, shifts = self.neighbours.edge_index, self.neighbours.shifts
        vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ cell
        distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        check_min_distance(edge_index, distances, self.min_distance)
        keep = distances < self.model.cutoff
        return edge_index[:, keep], shifts[keep]
