"""Times a NequIP model (nequip, random weights) through nequip.integrations.ase.NequIPCalculator;
runs in benchmarks/peers/.venv/nequip.

The model is built with ``nequip.model.NequIPGNNModel`` (or ``PresetNequIPGNNModel`` when the
--model JSON has a "preset") and handed, in eager mode, to the calculator with the same
transforms (type mapping + neighbour list) that ``NequIPCalculator`` loaders attach. nequip
recommends ``nequip-compile --mode aotinductor`` for production; that needs a training
checkpoint or package file, so it is not what is timed here. Model keys (--model JSON):
those of NequIPGNNModel (num_layers, l_max, num_features, parity, radial_mlp_depth,
radial_mlp_width, num_bessels, avg_num_neighbors, …) or "preset" plus overrides.
"""

from __future__ import annotations

from ase.data import chemical_symbols
from nequip.integrations.ase import NequIPCalculator
from nequip.integrations.utils import basic_transforms
from nequip.model import NequIPGNNModel, PresetNequIPGNNModel
from nequip.nn import graph_model
from nequip.utils.global_state import set_global_state
from worker_timing import run


def build(args, atoms):
    set_global_state()  # as nequip's own loaders do: float64 default dtype, fuser settings
    type_names = [chemical_symbols[z] for z in args.species]
    config = dict(args.model)
    builder = PresetNequIPGNNModel if "preset" in config else NequIPGNNModel
    model = builder(seed=args.seed, model_dtype=args.dtype, r_max=args.cutoff, type_names=type_names, **config)
    model.eval()
    transforms = basic_transforms(model.metadata, args.cutoff, type_names, {t: t for t in type_names})
    calc = NequIPCalculator(model=model, device="cpu", transforms=transforms)
    assert float(model.metadata[graph_model.R_MAX_KEY]) == args.cutoff
    return calc, model, "eager GraphModel (not nequip-compile'd)"


if __name__ == "__main__":
    run(build, ("nequip",), __doc__)
