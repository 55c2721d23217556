"""Command-line interface: ``eqcalc <command> ...``.

Each command lives in ``eqcalc/commands/<name>.py`` and defines ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

COMMANDS = ["check", "train", "eval", "calibrate", "convert", "md", "relax", "traj", "select", "learn", "import-mace"]  # module: name with "_" for "-"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="eqcalc", description="Symmetry-preserving ML potentials for ASE.")
    parser.add_argument("--version", action="version", version=f"eqcalc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"eqcalc.commands.{name.replace('-', '_')}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.add_argument(
            "--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is often fastest for "
            "small systems and always on a busy machine)"
        )
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be ≥ 1, got {args.threads}.")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"eqcalc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or missing folder: the system's words plus the fix
        if err.errno == errno.ENOSPC:
            fix = "free some space and run again (--resume continues an md or train run)"
        else:
            fix = "check the path and its permissions"
        print(f"eqcalc {args.command}: error: {err}; {fix}.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
