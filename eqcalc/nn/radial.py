"""Radial basis expansions of interatomic distances."""

from __future__ import annotations

import math
import threading
import warnings

import torch
from torch import nn

from ..data.validation import MIN_DISTANCE
from . import kernels


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


_FORWARD_AD_LOCK = threading.Lock()


class RadialSpline(nn.Module):
    """A radial function R: [r_0, r_c) → R^O (zero from r_c on) tabulated as a cubic Hermite spline.

    Values and slopes are computed exactly (float64, slopes by forward-mode autograd) at K + 1
    evenly spaced knots from r_0 = ``START`` (half the smallest interatomic distance eqcalc
    accepts by default; closer atoms raise an error) to r_c; K doubles from ``MIN_INTERVALS``
    until the spline's largest error at the midpoints of the intervals, where a cubic's error
    peaks, is within ``tolerance`` × max |R| (up to ``MAX_INTERVALS``; a warning if that is
    not enough). The spline is C¹: values
    and first derivatives (forces) are continuous everywhere, also at r_c where R, built on an
    envelope with vanishing slope, is zero with zero slope. Evaluated by the CPU kernel
    :func:`eqcalc.nn.kernels.radial_spline` (differentiable once: inference).

    Args:
        function: distances (n,) float64 Å -> (n, O) float64, smooth on [r_0, r_c].
        cutoff: r_c in Å.
        dtype, device: of the table.
        tolerance: relative error bound at the midpoints.
    """

    START = 0.5 * MIN_DISTANCE
    MIN_INTERVALS = 256
    MAX_INTERVALS = 1 << 16

    def __init__(self, function, cutoff: float, dtype: torch.dtype, device: torch.device | str, tolerance: float):
        super().__init__()
        if not float(cutoff) > self.START:
            raise ValueError(f"RadialSpline needs a cutoff above {self.START} Å, got {cutoff}.")
        self.cutoff = float(cutoff)
        intervals = self.MIN_INTERVALS
        while True:
            self.spacing = (self.cutoff - self.START) / intervals
            knots = self.START + torch.arange(intervals + 1, dtype=torch.float64) * self.spacing
            # torch.func's transform levels are process-wide, not per thread: no other thread may run
            # the function (a plain call included) while one is inside jvp
            with _FORWARD_AD_LOCK:
                values, derivatives = torch.func.jvp(function, (knots,), (torch.ones_like(knots),))  # dR/dr
                exact = function(knots[:-1] + 0.5 * self.spacing)
            slopes = derivatives * self.spacing
            # the spline at t = ½: ½ (V_i + V_i+1) + ⅛ (S_i − S_i+1)
            spline = 0.5 * (values[:-1] + values[1:]) + 0.125 * (slopes[:-1] - slopes[1:])
            self.max_error = float((spline - exact).abs().max()) / max(float(values.abs().max()), 1e-300)
            if self.max_error <= tolerance or intervals >= self.MAX_INTERVALS:
                break
            intervals *= 2
        if self.max_error > tolerance:
            warnings.warn(
                f"RadialSpline: {intervals} intervals reach a relative error of {self.max_error:.2g}, above the "
                f"requested {tolerance:.2g} (the function is not smooth enough on [{self.START}, {self.cutoff}] Å).",
                stacklevel=2,
            )
        self.intervals = intervals
        self.register_buffer("values", values.to(device=device, dtype=dtype), persistent=False)
        self.register_buffer("slopes", slopes.to(device=device, dtype=dtype), persistent=False)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """distances (R,) Å -> (R, O)."""
        return kernels.radial_spline(distances, self.values, self.slopes, self.START, self.spacing)
