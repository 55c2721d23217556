"""Inference through ``torch.compile``: the model's energies and their autograd backward (forces,
stress) as fused inductor kernels.

On a CPU most of an irreps model's time goes to many small elementwise kernels and the
dispatcher overhead between them; inductor fuses them into a few generated C++ loops. The
first call compiles (a one-off cost, shorter in a later process, which reads torch's on-disk cache;
measured in docs/performance.md), later calls reuse the compiled code. Shapes are
dynamic, so a new neighbour count after a Verlet-list rebuild, or another structure, does not
compile again; a few structural variants compile once each: with and without stress, radial MLPs
per pair of reverse edges or per neighbour slot (cells shorter than 2 r_c, pieces of chunked
evaluation; :mod:`eqcalc.nn.neighbour_slots`), and sizes 0 or 1 (torch specialises those).

Inference only: compiled graphs cannot be differentiated twice, so training (a loss on forces)
stays eager.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch._inductor.cpp_builder import get_cpp_compiler  # loaded anyway by e3nn: no import cost
from torch._inductor.exc import InvalidCxxCompiler

from .models.base import AtomisticModel


def compile_model(model: AtomisticModel, device: torch.device) -> Callable[..., torch.Tensor]:
    """``model`` (called as ``model(numbers, edge_index, edge_vectors, batch, num_graphs)``) as a
    compiled function with the same signature and results.

    :meth:`~eqcalc.models.base.AtomisticModel.prepare` runs eagerly first (what depends on the data
    through more than shapes: the species check, neighbour slots); only the tensor operations of
    :meth:`~eqcalc.models.base.AtomisticModel.energies` are compiled, as one graph (no graph breaks:
    each would add a guard check and a wrapper to every call). A model class that overrides
    ``forward`` itself is compiled whole instead.

    Python floats (cutoff, average neighbour count) are compiled in as constants rather than
    traced as inputs: tracing them makes the first compilation restart and misses torch's on-disk
    cache in every new process.
    """
    if device.type == "cpu":
        try:
            get_cpp_compiler()  # inductor's own search: $CXX, else g++
        except InvalidCxxCompiler:
            raise RuntimeError(
                "compile=True needs a C++ compiler for torch's inductor backend on CPU: g++, or the one the "
                "CXX environment variable names, and none works. Install one (Debian/Ubuntu: apt install g++), "
                "set CXX, or use compile=False."
            ) from None
    if type(model).forward is not AtomisticModel.forward:  # a family that changes forward: compiled whole
        compiled, prepare = torch.compile(model, dynamic=True), lambda *args: args
    else:  # eager: species check and index tables (data-dependent); compiled: one graph
        compiled, prepare = torch.compile(model.energies, dynamic=True), model.prepare

    def evaluate(*args) -> torch.Tensor:
        prepared = prepare(*args)
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(*prepared)

    return evaluate
