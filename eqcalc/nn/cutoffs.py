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

    f has a triple zero at x = 1 and equals Σ_{j=3}^{p+2} C(p+2, j) (1−x)ʲ x^(p+2−j) (one minus
    the Beta(p, 3) distribution function), a sum of positive terms on [0, 1]: evaluated so, f is
    accurate to rounding relative to its own value also near r_c, where the expanded form loses
    the digits of its cancelling terms (a float32 envelope would carry absolute errors of
    ~100 ε there).
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances: (E,) Å -> (E,) dimensionless."""
        p = self.p
        x = distances / self.cutoff
        y = 1.0 - x
        envelope = sum(math.comb(p + 2, j) * y.pow(j) * x.pow(p + 2 - j) for j in range(3, p + 3))
        return torch.where(x < 1.0, envelope, torch.zeros_like(x))


CUTOFFS = {"cosine": CosineCutoff, "polynomial": PolynomialCutoff}


def build_cutoff(name: str, cutoff: float) -> nn.Module:
    """Envelope by name: "cosine" or "polynomial" (p = 6)."""
    try:
        return CUTOFFS[name](cutoff)
    except KeyError:
        raise ValueError(f"Unknown cutoff envelope {name!r}; choose one of {sorted(CUTOFFS)}.") from None
