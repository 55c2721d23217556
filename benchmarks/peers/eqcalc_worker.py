"""Times an eqcalc model (random weights) through EquivariantCalculator; runs in /work/main/.venv.

    python eqcalc_worker.py --structure s.extxyz --model '{"family": "mace", "num_channels": 128, ...}' \
        --dtype float64 --repeats 5 --workdir /tmp/x
"""

from __future__ import annotations

import torch
from worker_timing import run

import eqcalc


def build(args, atoms):
    config = dict(args.model)
    family = config.pop("family")
    model = eqcalc.build_model(family, species=args.species, cutoff=args.cutoff, **config)
    model = model.to(getattr(torch, args.dtype)).eval()
    calc = eqcalc.EquivariantCalculator(model, skin=args.skin, compile=args.compile, reuse_memory=True)
    return calc, model, f"skin {args.skin} Å" + (", compile=True" if args.compile else "")


if __name__ == "__main__":
    run(build, ("eqcalc",), __doc__)
