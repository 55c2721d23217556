"""Smooth cutoff envelopes f(d) with f(0)=1, f(r_c)=0 and f'(r_c)=0.

Multiplying every edge contribution by an envelope makes the energy and the
forces go continuously to zero as a neighbour leaves the cutoff sphere.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """f(d) = ½[cos(π d / r_c) + 1] for d < r_c, else 0 (SchNet, Behler)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances: (E,) Å -> (E,) dimensionless."""
        envelope = 0.5 * (torch.cos(distances * (math.pi / self.cutoff)) + 1.0)
        return torch.where(distances < self.cutoff, envelope, torch.zeros_like(distances))


class PolynomialCutoff(nn.Module):
    """NequIP/DimeNet polynomial envelope of order p (default 6).

    f(x) = 1 − (p+1)(p+2)/2 xᵖ + p(p+2) xᵖ⁺¹ − p(p+1)/2 xᵖ⁺², x = d/r_c < 1.
    Its first and second derivatives vanish at r_c.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances: (E,) Å -> (E,) dimensionless."""
        p = self.p
        x = distances / self.cutoff
        envelope = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * x.pow(p)
            + p * (p + 2) * x.pow(p + 1)
            - 0.5 * p * (p + 1) * x.pow(p + 2)
        )
        return torch.where(x < 1.0, envelope, torch.zeros_like(x))


CUTOFFS = {"cosine": CosineCutoff, "polynomial": PolynomialCutoff}


def build_cutoff(name: str, cutoff: float) -> nn.Module:
    """Envelope by name: "cosine" or "polynomial" (p = 6)."""
    try:
        return CUTOFFS[name](cutoff)
    except KeyError:
        raise ValueError(f"Unknown cutoff envelope {name!r}; choose one of {sorted(CUTOFFS)}.") from None
