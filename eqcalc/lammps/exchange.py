"""Ghost feature exchange: a message-passing model across LAMMPS ranks with a one-cutoff ghost shell.

A model of L message-passing layers makes atom i's energy depend on atoms up to L cutoffs away, so
without help every rank needs a ghost shell of L·r_c + skin and recomputes the ghosts' features
itself (the halo). With the exchange the shell is r_c + skin: each rank computes the layers for its
local atoms only, on the edges into them, and before every layer :class:`GhostExchange` (the
model's ``ghost_exchange``, see :class:`eqcalc.models.base.OwnFeatures`) overwrites each ghost's
features with those its owner computed, by LAMMPS's forward communication of the pair style. The
adjoint runs in the backward pass: the gradients arriving at the ghosts' rows go back to their
owners and are added there (LAMMPS's reverse communication); a ghost's own row gets none, since
the layer's output there was replaced.

Every rank must make the same communication calls in the same order: each carries the same width
(the widest exchange of the model), the layers are the same on every rank, and each exchange is
made part of the autograd path to the positions (through an anchor the caller passes from the edge
vectors), so that its backward runs on every rank even where a rank's features do not depend on
the positions (no edges, no atoms). A rank whose evaluation fails part-way answers the remaining
communications with zeros (:meth:`GhostExchange.finish`), so that no other rank waits for it.
"""

from __future__ import annotations

import ctypes
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

#: the plugin's ``eqcalc_exchange(pair, rows, width, reverse)``: rows (nall, width) float64, in place
EXCHANGE_FUNCTION = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)

Communicate = Callable[[np.ndarray, bool], None]


class _Exchange(torch.autograd.Function):
    """Rows [0, n) of every feature tensor: local rows kept, ghost rows replaced by their owners'."""

    @staticmethod
    def forward(ctx, exchange: "GhostExchange", anchor: torch.Tensor, *features: torch.Tensor):
        ctx.exchange = exchange
        return exchange.apply_rows(features, reverse=False)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        exchange: GhostExchange = ctx.exchange
        sent = exchange.apply_rows(grads, reverse=True)
        return (None, None, *sent)


class GhostExchange(nn.Module):
    """A model's ``ghost_exchange`` on one LAMMPS rank.

    Args:
        communicate: ``communicate(rows, reverse)`` on a C-contiguous (nall, width) float64 array in
            LAMMPS's atom order (local atoms first): reverse False overwrites every ghost row with its
            owner's row; True adds every ghost row into its owner's row.
        width: the most doubles per atom one exchange carries (the plugin's buffer size); every
            communication carries this many.
        exchanges: how many exchanges one evaluation of the model makes (forward; as many reverse).

    Before each evaluation, :meth:`place` says which LAMMPS atoms the graph's first rows are and
    :attr:`anchor` is set to a zero scalar on the autograd path to the positions.
    """

    def __init__(self, communicate: Communicate, width: int, exchanges: int):
        super().__init__()
        self.communicate = communicate
        self.width = width
        self.exchanges = exchanges
        self.done = {False: 0, True: 0}  # communications made in this evaluation: forward, reverse
        self.rows = np.zeros(0, dtype=np.int64)
        self.nlocal = 0
        self.nall = 0
        self.anchor: torch.Tensor | None = None

    def place(self, rows: np.ndarray, nlocal: int, nall: int) -> None:
        """rows: (n,) the LAMMPS index of each of the graph's first n atoms, the nlocal local atoms
        first and in order; nall: local + ghost atoms on this rank."""
        if not np.array_equal(rows[:nlocal], np.arange(nlocal)):
            raise ValueError("the graph must begin with the local atoms, in LAMMPS's order")
        self.rows, self.nlocal, self.nall = rows, nlocal, nall
        self.done = {False: 0, True: 0}

    def finish(self) -> None:
        """Make the rest of this evaluation's communications with zero rows (after a failure on this
        rank: the other ranks' exchanges are answered, and the failure can then be reported on all)."""
        for reverse in (False, True):
            while self.done[reverse] < self.exchanges:
                self.done[reverse] += 1
                self.communicate(np.zeros((self.nall, self.width)), reverse)

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.anchor is None:
            raise RuntimeError("GhostExchange needs its anchor set before the model runs (see eqcalc.lammps.bridge)")
        return _Exchange.apply(self, self.anchor, *features)

    def apply_rows(self, tensors: tuple[torch.Tensor, ...], reverse: bool) -> tuple[torch.Tensor, ...]:
        """The first n rows of each tensor through one communication (forward: ghost rows get their
        owners'; reverse: ghost rows are added to their owners' and come back zero); rows from n
        on (the model's reference atoms) unchanged (forward) or zero (reverse)."""
        n = len(self.rows)
        widths = [math.prod(t.shape[1:]) for t in tensors]
        if sum(widths) > self.width:
            raise RuntimeError(f"ghost exchange of {sum(widths)} values per atom exceeds the plugin's buffer of {self.width}")
        rows = np.zeros((self.nall, self.width), dtype=np.float64)
        rows[self.rows, : sum(widths)] = torch.cat(
            [t[:n].detach().reshape(n, w).to(torch.float64) for t, w in zip(tensors, widths)], dim=1
        ).numpy()
        self.done[reverse] += 1
        self.communicate(rows, reverse)
        received = torch.from_numpy(rows[self.rows, : sum(widths)])
        if reverse:
            received[self.nlocal :] = 0.0
        outputs = []
        for tensor, block in zip(tensors, received.split(widths, dim=1)):
            head = block.to(tensor.dtype).reshape(tensor[:n].shape)
            tail = tensor[n:].detach() if not reverse else torch.zeros_like(tensor[n:])
            outputs.append(torch.cat([head, tail]))
        return tuple(outputs)


def anchored(model: nn.Module, exchange: GhostExchange) -> Callable[..., torch.Tensor]:
    """``model`` with its call signature (for :func:`eqcalc.properties.compute_properties`), setting
    ``exchange.anchor`` to a zero derived from the edge vectors before each evaluation."""

    def evaluate(numbers, edge_index, edge_vectors, batch, num_graphs):
        exchange.anchor = edge_vectors.sum() * 0.0
        try:
            return model(numbers, edge_index, edge_vectors, batch, num_graphs)
        finally:
            exchange.anchor = None

    return evaluate


def plugin_communicate(function: int, pair: int) -> Communicate:
    """``communicate`` for the plugin function at address ``function`` and the pair style at ``pair``."""
    call = EXCHANGE_FUNCTION(function)

    def communicate(rows: np.ndarray, reverse: bool) -> None:
        call(pair, rows.ctypes.data, rows.shape[1], int(reverse))

    return communicate


class _ExchangeProbe(nn.Module):
    """Records the exchanges a model asks for: their number and the widest (values per atom)."""

    def __init__(self):
        super().__init__()
        self.widths: list[int] = []

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.widths.append(sum(math.prod(t.shape[1:]) for t in features))
        return features


def exchanges_of(model: nn.Module) -> tuple[int, int]:
    """(the most values per atom ``model`` passes to its ``ghost_exchange`` in one call, the calls per
    evaluation), (0, 0) for none, from one evaluation of a two-atom graph (both depend on the
    architecture only)."""
    probe, own = _ExchangeProbe(), model.ghost_exchange
    model.ghost_exchange = probe
    try:
        numbers = torch.tensor([model.species[0]] * 2)
        edge_index = torch.tensor([[0, 1], [1, 0]])
        vectors = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=model.dtype) * 0.5 * model.cutoff
        with torch.no_grad():
            model(numbers, edge_index, vectors, torch.zeros(2, dtype=torch.long), 1)
    finally:
        model.ghost_exchange = own
    return max(probe.widths, default=0), len(probe.widths)
