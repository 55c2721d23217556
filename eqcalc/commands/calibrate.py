"""``eqcalc calibrate MODEL --train DATA --valid DATA --output OUT.pt``: a model file with a
fitted one-model uncertainty (LLPR, :mod:`eqcalc.llpr`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fit a model's one-model uncertainty (LLPR) on training data, calibrate it on validation data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (best_model.pt from eqcalc train, or an imported model)")
    parser.add_argument("--train", nargs="+", required=True, metavar="DATA",
                        help="the structures the model was trained on (extxyz, ASE .db, …; labels not needed)")
    parser.add_argument("--valid", nargs="+", required=True, metavar="DATA",
                        help="held-out labelled structures (reference forces; energies too for energy_std)")
    parser.add_argument("--output", "-o", required=True, metavar="OUT.pt", help="model file to write")
    parser.add_argument("--energy-key", help="info key of the reference energy")
    parser.add_argument("--forces-key", help="per-atom array of the reference forces")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.pt if it exists")


def read_atoms(paths: list[str], keys, species: list[int]) -> list:
    from ..data.readers import read_structures
    from ..data.validation import check_species

    frames = []
    for path in paths:
        for structure in read_structures(path, keys):
            try:
                check_species(structure.numbers, species)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            frames.append(structure.to_atoms())
    return frames


def run(args: argparse.Namespace) -> int:
    from ..data.readers import LabelKeys
    from ..llpr import fit_llpr
    from ..models.io import load_model, save_model

    if Path(args.output).exists() and not args.overwrite:
        raise ValueError(f"{args.output!r} already exists; add --overwrite to replace it.")
    model = load_model(args.model)
    model.readout_layers()  # a family without one: its error before any data is read
    keys = LabelKeys(args.energy_key, args.forces_key, None)
    train, valid = read_atoms(args.train, keys, model.species), read_atoms(args.valid, keys, model.species)
    dtype = model.dtype
    model.uncertainty = fit_llpr(model.double(), train, valid)  # fitted in float64, saved in the file's dtype
    save_model(model.to(dtype), args.output)
    fit = model.uncertainty
    energy = f", α_E {fit.energy_scale:.3g}" if fit.energy_scale is not None else " (no validation energies: no energy_std)"
    print(f"Wrote {args.output}: LLPR on {sum(len(a) for a in train)} training atoms, ς² {fit.regularizer:.3g}, "
          f"α_F {fit.force_scale:.3g}{energy}. The calculator now returns forces_std (eV/Å per atom) for this file.")
    return 0
