"""``eqcalc md``: molecular dynamics from a YAML file or flags (a thin layer over eqcalc.md.run)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ase import Atoms

HELP = "molecular dynamics (NVE, NVT Langevin/Bussi/Nosé–Hoover, NPT) with HDF5 trajectory, CSV log and plots"

# flag -> (MDConfig field, type, help)
SETTINGS = {
    "--ensemble": ("ensemble", str, "nve, nvt or npt (default nvt)"),
    "--thermostat": ("thermostat", str, "NVT thermostat: langevin, bussi or nose-hoover (default langevin)"),
    "--temperature": ("temperature", float, "K: target, and initial Maxwell–Boltzmann velocities (default 300)"),
    "--timestep": ("timestep", float, "fs (default 0.5)"),
    "--steps": ("steps", int, "total steps; with --resume, the step to continue to (default 1000)"),
    "--friction": ("friction", float, "Langevin friction, 1/fs (default 0.01)"),
    "--tau-t": ("tau_t", float, "Bussi / Nosé–Hoover / NPT thermostat time, fs (default 100 timesteps)"),
    "--pressure": ("pressure", float, "NPT pressure, GPa (default 0)"),
    "--tau-p": ("tau_p", float, "NPT barostat time, fs (default 1000 timesteps)"),
    "--seed": ("seed", int, "random seed for velocities and stochastic thermostats (default: drawn, recorded)"),
    "--velocities": ("velocities", str, "maxwell-boltzmann (default) or structure (the file's momenta)"),
    "--log-interval": ("log_interval", int, "steps between CSV log rows (default 10)"),
    "--traj-interval": ("traj_interval", int, "steps between trajectory frames (default 10)"),
    "--max-force": ("max_force", float, "stop if a force exceeds this, eV/Å (default 50)"),
    "--min-distance": ("min_distance", float, "stop if two atoms come closer, Å (default 0.5)"),
    "--max-temperature": ("max_temperature", float, "stop above this temperature, K (default max(10 T, 1000))"),
    "--skin": ("skin", float, "neighbour-list skin, Å (default 0.5)"),
    "--bond-factor": ("bond_factor", float, "stop when the structure falls apart into more fragments than at the "
                      "start; bonded = closer than this × the covalent radii sum (try 1.5; default off)"),
    "--max-force-uncertainty": ("max_force_uncertainty", float, "with a committee (several --model files or a "
                                "committee folder): act when an atom's force spread exceeds this, eV/Å (default off)"),
    "--uncertainty-action": ("uncertainty_action", str, "above --max-force-uncertainty: stop (default) the run, or "
                             "save the step's structure to OUTPUT/uncertain.extxyz and carry on"),
}
RUN_KEYS = ("model", "structure", "output", "device", "dtype", "compile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="settings file (keys: model, structure, output, device, "
                        "dtype, compile and the long flag names with underscores); flags override it")
    parser.add_argument("--model", nargs="+", metavar="MODEL", help="model file, or several (or a committee "
                        "folder) for a committee: MD on their mean, with their spread logged (default: the "
                        "bundled model)")
    parser.add_argument("--structure", help="any file ase.io.read reads (default: the bundled molecule)")
    parser.add_argument("--output", help="run folder (default md_run)")
    for flag, (_, kind, text) in SETTINGS.items():
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="run the model through torch.compile: "
                        "faster steps after a one-off compilation (needs a C++ compiler on CPU); --no-compile "
                        "overrides a YAML compile: true")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="run the model in this precision")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last frame")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def collect_settings(args: argparse.Namespace) -> tuple[dict, dict]:
    """(run options, MD settings): the YAML file's values overridden by the flags given."""
    from ..md.config import read_yaml

    values = read_yaml(args.config) if args.config else {}
    for key in RUN_KEYS:
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for field, _, _ in SETTINGS.values():
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    options = {key: values.pop(key) for key in RUN_KEYS if key in values}
    if "model" in options:
        options["model"] = model_argument(options["model"])
    return options, values


def model_argument(value):
    """A model path, or a list of them for a committee: a YAML ``model:`` or the ``--model`` files
    (one of them is passed on as a single path, a file or a committee folder)."""
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(item, str) for item in value):
            raise ValueError(f"model must be a model file or a list of model files, got {value!r}.")
        return value[0] if len(value) == 1 else list(value)
    return value


def read_structure(path) -> Atoms:
    """The structure in ``path`` (any format ase.io.read knows; the last frame of a trajectory)."""
    from ..data.readers import read_frames

    atoms = read_frames(path, index="-1")[0]
    if len(atoms) == 0:
        raise ValueError(f"{str(path)!r} holds a structure with no atoms.")
    return atoms


def run(args: argparse.Namespace) -> int:
    from ..md import run as run_md
    from ..md.defaults import DEFAULT_MODEL, DEFAULT_STRUCTURE, bundled_asset

    options, settings = collect_settings(args)
    output = options.get("output", "md_run")
    device = options.get("device", "cpu")
    common = dict(
        output=output, progress=not args.no_progress, device=device, dtype=options.get("dtype"),
        compile=options.get("compile", False),
    )
    if args.resume:
        result = run_md(None, options.get("model"), resume=True, **common, **settings)
    else:
        model = options.get("model") or bundled_asset(DEFAULT_MODEL)
        structure = options.get("structure") or bundled_asset(DEFAULT_STRUCTURE)
        atoms = read_structure(structure)
        result = run_md(atoms, model, overwrite=args.overwrite, **common, **settings)
    print(
        f"Reached step {result.step} ({result.steps_run} steps in this call): "
        f"{result.steps_per_second:.3g} steps/s, {result.ns_per_day:.3g} ns/day; neighbour list "
        f"{100 * result.neighbour_fraction:.1f}% of the time ({result.neighbour_rebuilds} rebuilds)."
    )
    written = ["trajectory.h5", "log.csv", "energy.png", "temperature.png"]
    if result.committee_size > 1:
        written.append("uncertainty.png")
    print(f"Wrote {output}/: {', '.join(written)}, final.extxyz, config.yaml")
    if result.uncertain_frames:
        print(f"Saved {result.uncertain_saved} frames with a committee force spread above the limit in this call; "
              f"{output}/uncertain.extxyz holds {result.uncertain_frames}: label them (e.g. with DFT) and add them to "
              "the training data.")
    elif result.uncertain_frames is not None:
        print(f"Saved 0 frames: no step's committee force spread exceeded the limit "
              f"({output}/uncertain.extxyz is empty).")
    if not result.completed:
        print(f"eqcalc md: {result.stop_reason}. The trajectory ends with the last good frame.", file=sys.stderr)
        return 3
    return 0
