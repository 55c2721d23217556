"""``eqcalc traj``: inspect and convert HDF5 trajectories written by ``eqcalc md``."""

from __future__ import annotations

import argparse

HELP = "inspect (info), convert (export) or repair a killed run's eqcalc md trajectory.h5"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write frames to any ASE format (extxyz, xyz, traj, …); a "
                                "committee's per-atom forces_std goes along as an array")
    export.add_argument("trajectory", help="trajectory.h5 of an eqcalc md run")
    export.add_argument("output", help="output file; format from its extension unless --format")
    export.add_argument("--every", type=int, default=1, help="keep every K-th frame (default 1)")
    export.add_argument("--format", help="ASE format name, e.g. extxyz")
    info = actions.add_parser("info", help="number of frames, steps, time span, atoms")
    info.add_argument("trajectory", help="trajectory.h5 of an eqcalc md run")
    repair = actions.add_parser("repair", help="make the file of a killed run open in any HDF5 tool (in place: clears its write flags, drops a partial frame)")
    repair.add_argument("trajectory", help="trajectory.h5 of an eqcalc md run")


def run(args: argparse.Namespace) -> int:
    from ..md.trajectory import export_trajectory, read_trajectory, repair_trajectory

    if args.action == "export":
        count = export_trajectory(args.trajectory, args.output, every=args.every, format=args.format)
        print(f"Wrote {count} frames to {args.output}")
        return 0
    if args.action == "repair":
        print(f"Kept {repair_trajectory(args.trajectory)} complete frames in {args.trajectory}")
        return 0
    trajectory = read_trajectory(args.trajectory)
    print(f"{len(trajectory)} frames of {len(trajectory.numbers)} atoms")
    if len(trajectory):
        first, last = 0, len(trajectory) - 1
        print(f"steps {trajectory.step[first]}–{trajectory.step[last]}, "
              f"time {trajectory.time[first]:g}–{trajectory.time[last]:g} fs")
    md = trajectory.metadata.get("md", {})
    print(f"ensemble {md.get('ensemble')}, timestep {md.get('timestep')} fs, model {trajectory.metadata.get('model')}")
    if trajectory.forces_std is not None and len(trajectory):  # a committee's run
        frame, atom = divmod(int(trajectory.forces_std.argmax()), len(trajectory.numbers))
        print(f"committee force spread (forces_std): largest {trajectory.forces_std.max():.3g} eV/Å, on atom {atom} "
              f"at step {trajectory.step[frame]}")
    return 0
