"""Species-dependent transforms of interatomic distances, applied before a radial basis.

The Agnesi transform (ACEpotentials.jl, Witt et al., J. Chem. Phys. 159, 164101 (2023)) of an
edge i → j at distance r (Å),

    t(r) = 1 / (1 + a x^q / (1 + x^(q − p))),   x = r / r_0,   r_0 = (R_i + R_j) / 2,

R the covalent radii (ase.data.covalent_radii, Å), decreases smoothly from 1 at r = 0 to 0 as
r → ∞ (p > q > 0): short distances, where atoms rarely are, get a wide part of the basis'
range, scaled to each pair of elements. With the defaults of mace-torch's
``distance_transform="Agnesi"`` (q = 0.9183, p = 4.5791, a = 1.0805). t is dimensionless; the
radial basis reads it in place of the distance.
"""

from __future__ import annotations

from typing import Sequence

import torch
from ase.data import covalent_radii
from torch import nn

TRANSFORMS = ("agnesi",)


class AgnesiTransform(nn.Module):
    """t(r; Z_i, Z_j) above, for the species of a model.

    Args:
        atomic_numbers: the atomic number of each species index.

    Buffers (saved with the model, so that imported values stay exact): ``covalent_radii``
    (num_species,) Å, ``q``, ``p``, ``a`` (scalars).
    """

    def __init__(self, atomic_numbers: Sequence[int]):
        super().__init__()
        numbers = [int(z) for z in atomic_numbers]
        dtype = torch.get_default_dtype()
        self.register_buffer("covalent_radii", torch.tensor(covalent_radii[numbers], dtype=dtype))
        self.register_buffer("q", torch.tensor(0.9183, dtype=dtype))
        self.register_buffer("p", torch.tensor(4.5791, dtype=dtype))
        self.register_buffer("a", torch.tensor(1.0805, dtype=dtype))

    def forward(self, distances: torch.Tensor, species_i: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        """distances (R,) Å, species_i, species_j (R,) int64 species indices of the two ends
        (either order: t is symmetric) -> (R,) dimensionless t."""
        x = 2.0 * distances / (self.covalent_radii[species_i] + self.covalent_radii[species_j])
        return 1.0 / (1.0 + self.a * x.pow(self.q) / (1.0 + x.pow(self.q - self.p)))


def build_distance_transform(name: str | None, atomic_numbers: Sequence[int]) -> nn.Module | None:
    """The transform called ``name`` ("agnesi"), None for None; ValueError naming the choices."""
    if name is None:
        return None
    if name != "agnesi":
        raise ValueError(f"Unknown distance transform {name!r}; choose one of {list(TRANSFORMS)} or None.")
    return AgnesiTransform(atomic_numbers)
