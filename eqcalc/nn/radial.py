"""Radial basis expansions of interatomic distances."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianBasis(nn.Module):
    """e_k(d) = exp(−γ (d − μ_k)²), μ_k evenly spaced on [0, r_c], γ = 1 / (2Δμ²)."""

    def __init__(self, cutoff: float, num_basis: int = 32):
        super().__init__()
        if int(num_basis) < 2:
            raise ValueError(f"GaussianBasis needs num_basis ≥ 2 (centres spaced over [0, r_c]), got {num_basis}.")
        centers = torch.linspace(0.0, float(cutoff), int(num_basis))
        spacing = float(cutoff) / (int(num_basis) - 1)
        self.register_buffer("centers", centers)
        self.gamma = 0.5 / spacing**2
        self.num_basis = int(num_basis)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances: (E,) Å -> (E, num_basis)."""
        return torch.exp(-self.gamma * (distances[:, None] - self.centers) ** 2)


class BesselBasis(nn.Module):
    """e_k(d) = √(2/r_c) · sin(kπ d / r_c) / d, k = 1…num_basis (DimeNet, NequIP).

    The frequencies kπ/r_c are trainable when ``trainable`` is set, as in NequIP.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = True):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        frequencies = math.pi * torch.arange(1, self.num_basis + 1, dtype=torch.get_default_dtype()) / self.cutoff
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances: (E,) Å, all > 0 -> (E, num_basis)."""
        d = distances[:, None]
        return self.prefactor * torch.sin(self.frequencies * d) / d
