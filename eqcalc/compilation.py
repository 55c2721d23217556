"""Inference through ``torch.compile``: the model's forward and its autograd backward (forces,
stress) as fused inductor kernels.

On a CPU most of an irreps model's time goes to many small elementwise kernels and the
dispatcher overhead between them; inductor fuses them into a few generated C++ loops. The
first call compiles (1–2.5 min on a 2-core machine for the default NequIP and MACE models; 10–20 s
in a later process, from torch's on-disk cache), later calls reuse the compiled code. Shapes are
dynamic, so a new neighbour count after a Verlet-list rebuild, or another structure, does not
compile again.

Inference only: compiled graphs cannot be differentiated twice, so training (a loss on forces)
stays eager.
"""

from __future__ import annotations

import shutil
import sysconfig
from typing import Callable

import torch

from .models.base import AtomisticModel


def _cpu_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU, or None when none is installed."""
    candidates = [sysconfig.get_config_var("CXX") or "", "g++", "clang++", "c++"]
    for candidate in candidates:
        command = candidate.split(" ")[0]
        if command and shutil.which(command):
            return command
    return None


def compile_model(model: AtomisticModel, device: torch.device) -> Callable[..., torch.Tensor]:
    """``model`` (called as ``model(numbers, edge_index, edge_vectors, batch, num_graphs)``) as a
    compiled function with the same signature and results.

    Python floats (cutoff, average neighbour count) are compiled in as constants rather than
    traced as inputs: tracing them makes the first compilation restart and misses torch's on-disk
    cache in every new process.
    """
    if device.type == "cpu" and _cpu_compiler() is None:
        raise RuntimeError(
            "compile=True needs a C++ compiler (g++ or clang++) for torch's inductor backend on CPU, "
            "and none was found on PATH. Install one (Debian/Ubuntu: apt install g++) or use compile=False."
        )
    compiled = torch.compile(model, dynamic=True)

    def evaluate(*args) -> torch.Tensor:
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(*args)

    return evaluate
