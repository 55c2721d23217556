"""Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion as a per-atom pair energy.

For an edge i → j at distance r (Å), with atomic numbers Z_i, Z_j,

    V(r) = k_e Z_i Z_j / r · φ(r / a) · f_p(r / (R_i + R_j))                   (eV)
    φ(x) = Σ_k c_k exp(−b_k x),   b = (3.2, 0.9423, 0.4028, 0.2016)
    a    = a_prefactor · 0.529 Å / (Z_i^a_exp + Z_j^a_exp)

k_e = e²/(4πε₀) = 14.3996 eV·Å, c the ZBL screening weights (0.1818, 0.5099, 0.2802, 0.02817),
R the covalent radii (ase.data.covalent_radii, Å) and f_p the polynomial envelope of order p
(:class:`~eqcalc.nn.cutoffs.PolynomialCutoff`), so V vanishes with two derivatives from
r = R_i + R_j on. Each atom takes half of each of its edges, E_i = ½ Σ_j V(r_ij): with a full
neighbour list (both directions of every pair) the pair gets V once. This is the form (and the
constants a_prefactor = 0.4543, a_exp = 0.3) of mace-torch's ``pair_repulsion``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from ase.data import covalent_radii
from torch import nn

from .cutoffs import PolynomialCutoff

COULOMB = 14.3996  # e²/(4πε₀) in eV·Å
BOHR = 0.529  # Å
SCREENING_EXPONENTS = (3.2, 0.9423, 0.4028, 0.2016)


class ZBLRepulsion(nn.Module):
    """E_i = ½ Σ_j V_ZBL(r_ij) (see the module docstring) for the species of a model.

    Args:
        atomic_numbers: the atomic number of each species index.
        p: order of the envelope that takes V to zero at R_i + R_j.

    Buffers (saved with the model, so that imported values stay exact): ``covalent_radii``
    (num_species,) Å, ``screening_weights`` (4,) c, ``a_exp`` and ``a_prefactor`` (scalars).
    """

    def __init__(self, atomic_numbers: Sequence[int], p: int = 6):
        super().__init__()
        numbers = [int(z) for z in atomic_numbers]
        dtype = torch.get_default_dtype()
        self.register_buffer("atomic_numbers", torch.tensor(numbers, dtype=dtype), persistent=False)
        self.register_buffer("covalent_radii", torch.tensor(covalent_radii[numbers], dtype=dtype))
        self.register_buffer("screening_weights", torch.tensor([0.1818, 0.5099, 0.2802, 0.02817], dtype=dtype))
        self.register_buffer("a_exp", torch.tensor(0.300, dtype=dtype))
        self.register_buffer("a_prefactor", torch.tensor(0.4543, dtype=dtype))
        self.envelope = PolynomialCutoff(1.0, p=p)  # of r / (R_i + R_j)

    def forward(self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """species (N,) int64 indices, edge_index (2, E) [centre i, neighbour j], edge_vectors
        (E, 3) Å -> (N,) eV in the dtype of edge_vectors: each atom's half of its edges' V."""
        r = torch.linalg.vector_norm(edge_vectors, dim=-1)
        species_i, species_j = species.index_select(0, edge_index[0]), species.index_select(0, edge_index[1])
        z_i, z_j = self.atomic_numbers[species_i], self.atomic_numbers[species_j]
        a = self.a_prefactor * BOHR / (z_i.pow(self.a_exp) + z_j.pow(self.a_exp))
        x = r / a
        phi = sum(c * torch.exp(-b * x) for c, b in zip(self.screening_weights.unbind(), SCREENING_EXPONENTS))
        reach = self.covalent_radii[species_i] + self.covalent_radii[species_j]
        pair = COULOMB * z_i * z_j / r * phi * self.envelope(r / reach)
        return (0.5 * pair).new_zeros(species.shape[0]).index_add(0, edge_index[0], 0.5 * pair)
