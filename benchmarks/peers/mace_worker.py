"""Times a MACE model (mace-torch, random weights) through mace.calculators.MACECalculator;
runs in benchmarks/peers/.venv/mace.

The model is built with ``mace.modules.ScaleShiftMACE`` (residual interaction blocks in every
layer, as ``mace_run_train`` builds by default), saved with torch.save and loaded back by the
calculator, as a user's model file would be. Model keys (--model JSON): hidden_irreps,
max_ell, correlation, num_interactions, num_bessel, radial_MLP, MLP_irreps, avg_num_neighbors,
optional num_polynomial_cutoff (5).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from mace import modules  # before e3nn: mace sets the flag e3nn 0.4.4 needs to load its constants on torch ≥ 2.6
from peer_test_worker import mace_calculator
from worker_timing import run

from e3nn import o3  # isort: skip


def build_model(config: dict, species: list[int], cutoff: float) -> torch.nn.Module:
    """ScaleShiftMACE with residual interaction blocks in every layer (``mace_run_train``'s default),
    random weights, zero E0s, scale 1 and shift 0, in torch's default dtype; ``config``: the
    keys of this module's docstring."""
    interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=cutoff,
        num_bessel=config["num_bessel"],
        num_polynomial_cutoff=config.get("num_polynomial_cutoff", 5),
        max_ell=config["max_ell"],
        interaction_cls=interaction,
        interaction_cls_first=interaction,
        num_interactions=config["num_interactions"],
        num_elements=len(species),
        hidden_irreps=o3.Irreps(config["hidden_irreps"]),
        MLP_irreps=o3.Irreps(config["MLP_irreps"]),
        atomic_energies=np.zeros(len(species)),
        avg_num_neighbors=config["avg_num_neighbors"],
        atomic_numbers=species,
        correlation=config["correlation"],
        gate=torch.nn.functional.silu,
        radial_MLP=config["radial_MLP"],
        radial_type="bessel",
        use_reduced_cg=False,  # mace_run_train's default
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def build(args, atoms):
    torch.set_default_dtype(getattr(torch, args.dtype))
    model = build_model(args.model, args.species, args.cutoff)
    path = os.path.join(args.workdir, f"mace-{os.getpid()}.model")
    torch.save(model, path)
    try:
        calc = mace_calculator(path, args.dtype, args.compile)
    finally:
        os.remove(path)
    compiled = ", compile_mode='default'" if args.compile else ""
    return calc, calc.models[0], "MACECalculator always computes stress, also for molecules" + compiled


if __name__ == "__main__":
    run(build, ("mace-torch",), __doc__)
