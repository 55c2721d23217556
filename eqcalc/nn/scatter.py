"""Segment sums over edges or atoms."""

from __future__ import annotations

import torch


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[k] = Σ_{n: index[n]=k} values[n].

    values: (M, ...), index: (M,) int64 in [0, size) -> (size, ...).
    """
    out = values.new_zeros((size,) + tuple(values.shape[1:]))
    return out.index_add_(0, index, values)
