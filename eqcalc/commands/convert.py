"""``eqcalc convert IN... OUT.h5``: labelled structures from any readable format into eqcalc HDF5."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "convert labelled structures (extxyz, ASE .db, …) into an eqcalc HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IN", help="input data files")
    parser.add_argument("output", metavar="OUT.h5", help="HDF5 file to write")
    parser.add_argument("--append", action="store_true", help="add to OUT.h5 instead of replacing it")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.h5 if it exists")
    parser.add_argument("--energy-key", help="info key of the energy")
    parser.add_argument("--forces-key", help="per-atom array of the forces")
    parser.add_argument("--stress-key", help="info key of the stress")


def run(args: argparse.Namespace) -> int:
    from ..data.hdf5 import write_hdf5
    from ..data.readers import HDF5_SUFFIXES, LabelKeys, read_structures

    if Path(args.output).suffix.lower() not in HDF5_SUFFIXES:
        raise ValueError(f"The output {args.output!r} must end in .h5 or .hdf5.")
    if Path(args.output).exists() and not (args.append or args.overwrite):
        raise ValueError(
            f"{args.output!r} already exists. Add --append to add these structures to it, or --overwrite to replace it."
        )
    keys = LabelKeys(args.energy_key, args.forces_key, args.stress_key)
    structures = [s for path in args.inputs for s in read_structures(path, keys)]
    write_hdf5(args.output, structures, append=args.append)
    counts = {q: sum(getattr(s, q) is not None for s in structures) for q in ("energy", "forces", "stress")}
    print(
        f"Wrote {len(structures)} structures to {args.output} "
        f"(with energy {counts['energy']}, forces {counts['forces']}, stress {counts['stress']})."
    )
    return 0
