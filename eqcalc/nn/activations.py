"""Elementwise nonlinearities used by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn


class ShiftedSoftplus(nn.Module):
    """ssp(x) = ln(½eˣ + ½) = softplus(x) − ln 2, so ssp(0) = 0 (SchNet)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(x) - math.log(2.0)


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU, bias: bool = True) -> nn.Sequential:
    """Dense network sizes[0] → … → sizes[-1], with ``activation`` between layers (none after the last)."""
    layers: list[nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)
