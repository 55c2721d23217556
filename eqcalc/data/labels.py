"""Reference labels and their masks, batched alongside an :class:`AtomicGraph`.

Missing labels hold NaN and a False mask: a loss that forgot the mask would turn NaN
instead of silently training towards zero.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .graph import AtomicGraph, batch_graphs
from .labelled import LabelledStructure


@dataclass
class Labels:
    """Labels of B structures with N atoms in all.

    Attributes:
        energy: (B,) float64 eV, NaN where missing.
        has_energy: (B,) bool.
        forces: (N, 3) float64 eV/Å, NaN where missing.
        has_forces: (N,) bool, per atom.
        stress: (B, 3, 3) float64 eV/Å³ (ASE sign), NaN where missing.
        has_stress: (B,) bool.
        dipole: (B, 3) float64 e·Å, NaN where missing.
        has_dipole: (B,) bool.
        polarizability: (B, 3, 3) float64 Å³, NaN where missing.
        has_polarizability: (B,) bool.
        charge: (B,) float64 total charge, e.
        num_atoms: (B,) int64 atoms per structure.
    """

    energy: torch.Tensor
    has_energy: torch.Tensor
    forces: torch.Tensor
    has_forces: torch.Tensor
    stress: torch.Tensor
    has_stress: torch.Tensor
    dipole: torch.Tensor
    has_dipole: torch.Tensor
    polarizability: torch.Tensor
    has_polarizability: torch.Tensor
    charge: torch.Tensor
    num_atoms: torch.Tensor

    @classmethod
    def of(cls, structure: LabelledStructure) -> "Labels":
        """Labels of one structure."""
        n = structure.num_atoms
        nan = float("nan")
        return cls(
            energy=torch.tensor([nan if structure.energy is None else structure.energy], dtype=torch.float64),
            has_energy=torch.tensor([structure.energy is not None]),
            forces=torch.as_tensor(structure.forces if structure.forces is not None else np.full((n, 3), nan)),
            has_forces=torch.full((n,), structure.forces is not None),
            stress=torch.as_tensor(structure.stress if structure.stress is not None else np.full((3, 3), nan))[None],
            has_stress=torch.tensor([structure.stress is not None]),
            dipole=torch.as_tensor(structure.dipole if structure.dipole is not None else np.full(3, nan))[None],
            has_dipole=torch.tensor([structure.dipole is not None]),
            polarizability=torch.as_tensor(
                structure.polarizability if structure.polarizability is not None else np.full((3, 3), nan)
            )[None],
            has_polarizability=torch.tensor([structure.polarizability is not None]),
            charge=torch.tensor([structure.charge], dtype=torch.float64),
            num_atoms=torch.tensor([n], dtype=torch.int64),
        )

    @classmethod
    def concatenate(cls, labels: list["Labels"]) -> "Labels":
        return cls(**{f.name: torch.cat([getattr(item, f.name) for item in labels]) for f in fields(cls)})

    def to(self, device: str | torch.device) -> "Labels":
        return Labels(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def collate(items: list[tuple[AtomicGraph, Labels]]) -> tuple[AtomicGraph, Labels]:
    """Batch (graph, labels) pairs into one graph and one :class:`Labels` (the DataLoader collate_fn)."""
    graphs, labels = zip(*items)
    return batch_graphs(list(graphs)), Labels.concatenate(list(labels))
