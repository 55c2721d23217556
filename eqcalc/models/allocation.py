"""A bound on what building a model from a file's config may allocate.

A model file's config fixes the sizes of the tensors its family builds, so a damaged or hostile
file (``num_features: 300000``) could ask for hundreds of gigabytes before its weights are ever
compared with the config. Inside :class:`AllocationLimit`, every tensor made by a torch factory
function (``torch.empty``, ``zeros``, ``randn``, …: what ``nn.Linear``, e3nn and the families use)
is checked against a number of elements first and refused with :class:`AllocationLimitError`.
"""

from __future__ import annotations

import math

import torch
from torch.overrides import TorchFunctionMode

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full}


class AllocationLimitError(ValueError):
    """A factory call asked for more elements than the limit."""


def _requested_elements(func, args: tuple, kwargs: dict) -> int:
    size = kwargs.get("size", args[0] if args else ())
    if func is torch.full or not isinstance(size, int):  # full(size, value); others take size or *size
        dims = size if not isinstance(size, int) else (size,)
    else:
        dims = tuple(a for a in args if isinstance(a, int))
    return math.prod(int(d) for d in dims)


class AllocationLimit(TorchFunctionMode):
    """Within this context, a torch factory call for more than ``max_elements`` elements raises
    :class:`AllocationLimitError` instead of allocating (one tensor at a time; the calling
    thread only)."""

    def __init__(self, max_elements: int):
        super().__init__()
        self.max_elements = int(max_elements)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            requested = _requested_elements(func, args, kwargs)
            if requested > self.max_elements:
                raise AllocationLimitError(
                    f"it asks for a tensor of {requested:,} elements, more than the {self.max_elements:,} "
                    "allowed while it is built"
                )
        return func(*args, **kwargs)
