"""``eqcalc select TRAJ... --n K --output picked.extxyz``: frames to label, uncertain and distinct
(a thin layer over :mod:`eqcalc.selection`)."""

from __future__ import annotations

import argparse

HELP = "pick K frames to label (by DFT or another reference): uncertain by committee force spread, and distinct"

RULE = """\
uncertainty u of a frame: max_i forces_std_i (eV/Å), the largest per-atom force spread of the
committee given by --model, else read from the frames' per-atom forces_std arrays (eqcalc md with
a committee stores them).

descriptor of a frame: per element pair, a Gaussian-smeared (σ 0.2 Å) histogram of the interatomic
distances up to the cutoff (periodic images included), weighted by (1 + cos(π r / cutoff)) / 2 and
divided by the number of atoms: unchanged by rotations, reflections, translations, permutations of
atoms and periodic supercells. Distance between frames: the Euclidean distance of descriptors.

rule: candidates are every S-th frame (--every) of each file with --min-uncertainty ≤ u ≤
--max-uncertainty (each optional; the upper bound leaves out frames far outside the data). The first
pick is the candidate of the largest u; each further pick is the unpicked candidate maximising
u × (distance to the nearest frame already picked); ties go to the larger u, then the earlier
frame. Near-copies of a picked frame score ≈ 0, so K picks spread over distinct structures.

output: extxyz with positions, cell, pbc, numbers and the frames' info (no energies, forces or
other model results), plus info source (file), frame (index in it) and max_force_std (eV/Å)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = RULE
    parser.add_argument("trajectories", nargs="+", metavar="TRAJ",
                        help="candidate frames: eqcalc md trajectory.h5, extxyz, ASE .traj or any file ase.io.read reads")
    parser.add_argument("--n", type=int, required=True, metavar="K", help="number of frames to pick")
    parser.add_argument("--output", required=True, metavar="OUT.extxyz", help="extxyz file for the picked frames")
    parser.add_argument("--model", nargs="+", metavar="M",
                        help="committee: two or more model files, or one committee folder (default: the frames' "
                        "forces_std arrays)")
    parser.add_argument("--min-uncertainty", type=float, metavar="X",
                        help="only frames with max forces_std ≥ X eV/Å are candidates (default: no lower bound)")
    parser.add_argument("--max-uncertainty", type=float, metavar="X",
                        help="only frames with max forces_std ≤ X eV/Å are candidates (default: no upper bound)")
    parser.add_argument("--every", type=int, default=1, metavar="S",
                        help="consider every S-th frame of each file (default 1)")
    parser.add_argument("--cutoff", type=float,
                        help="descriptor cutoff, Å (default: the committee's cutoff, else 5)")
    parser.add_argument("--device", default="cpu", help="torch device for the committee (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="run the committee in this precision")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import selection

    if args.n < 1:
        raise ValueError(f"--n must be ≥ 1 (frames to pick), got {args.n}.")
    if args.every < 1:
        raise ValueError(f"--every must be ≥ 1, got {args.every}.")
    if args.cutoff is not None and not args.cutoff > 0:
        raise ValueError(f"--cutoff must be > 0 Å, got {args.cutoff:g}.")
    candidates = selection.read_candidates(args.trajectories, every=args.every)
    cutoff = args.cutoff
    if args.model:
        calculator = selection.committee_calculator(args.model if len(args.model) > 1 else args.model[0],
                                                    device=args.device, dtype=args.dtype)
        uncertainties = selection.committee_uncertainties(candidates, calculator)
        cutoff = cutoff or calculator.model.cutoff
    else:
        uncertainties = selection.stored_uncertainties(candidates)
    cutoff = cutoff or selection.DEFAULT_CUTOFF
    names = ("--min-uncertainty", "--max-uncertainty")
    window = (args.min_uncertainty, args.max_uncertainty)
    inside = int(np.sum(selection.in_window(uncertainties, *window)))
    selection.check_request(inside, len(candidates), args.n, *window, "--n", names)
    descriptors = selection.frame_descriptors([c.atoms for c in candidates], cutoff)
    picked = selection.greedy_pick(descriptors, uncertainties, args.n, *window)
    selection.write_extxyz(args.output, [selection.labelling_frame(candidates[p], uncertainties[p]) for p in picked])
    width = max(len(candidates[p].source) for p in picked)
    for rank, p in enumerate(picked, start=1):
        print(f"{rank:4d}  {candidates[p].source:<{width}}  frame {candidates[p].index:<6d}  "
              f"max forces_std {uncertainties[p]:.4g} eV/Å")
    limit = "" if window == (None, None) else f" with max forces_std {selection.window_text(*window)}"
    print(f"Wrote {len(picked)} of {inside} candidate frames{limit} ({len(candidates)} read) to {args.output}.")
    print("Next: label them (DFT or your reference: energy, forces, stress), then add them to the training data "
          "and retrain (`eqcalc train`).")
    return 0
