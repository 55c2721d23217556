"""``eqcalc import-mace MODEL.model OUT.pt``: a mace-torch model as an eqcalc model file, exactly."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert a mace-torch model file (.model) into an eqcalc model file, exactly (no mace-torch needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.model", help="the file mace-torch saved (torch.save of the module, "
                        "or {'state_dict': ..., 'hyperparameters': ...})")
    parser.add_argument("output", metavar="OUT.pt", help="eqcalc model file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.pt if it exists")


def run(args: argparse.Namespace) -> int:
    from ..importers.mace import import_mace

    if Path(args.output).exists() and not args.overwrite:
        raise ValueError(f"{args.output!r} already exists; add --overwrite to replace it.")
    model = import_mace(args.model, args.output)
    hidden = f"{model.num_channels} channels, max_L {model.max_L}, max_ell {model.lmax}"
    print(
        f"Wrote {args.output}: eqcalc mace ({hidden}, correlation {model.correlation}, {model.num_layers} layers, "
        f"species {model.species}, cutoff {model.cutoff} Å, float64). Check it with: eqcalc check {args.output}"
    )
    return 0
