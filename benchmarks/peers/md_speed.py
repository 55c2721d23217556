"""MD speed: Velocity Verlet steps/s and ns/day of every eqcalc family at its default size,
side by side with MACE's ASE calculator (mace-torch, random weights), on the 21-atom aspirin
molecule and the 192-atom water box, float32 and float64; plus the share of an eqcalc step
spent on the neighbour list with the Verlet skin (reused list) and without it (rebuilt every step).

Every worker is a fresh subprocess running ASE's ``VelocityVerlet`` (dt 0.5 fs) with its
package's calculator (see ``worker_timing.time_md``). For each (system, dtype) the models run
alternately (A B C … A B C …, ``--rounds`` times), and the table gives the median ms per step
of all rounds × repeats. The neighbour-list share comes from two longer runs per eqcalc model
after the alternating rounds (``--share-steps`` steps each, so the skin list is rebuilt several
times within the window; calculate() calls along the same 0.01 Å rms random walk, since random-weight
forces would pull the heavy-mass MD together within a few hundred steps): with the Verlet skin, and
with skin 0 (rebuilt every step).

    .venv/bin/python benchmarks/peers/md_speed.py [--threads 1 --rounds 2 --repeats 10]

Needs the MACE venv (``bash benchmarks/peers/setup_env.sh mace``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ase.io import write
from compare import (
    AVG_NUM_NEIGHBORS,
    PAIRS,
    SYSTEMS,
    WorkerFailed,
    checked_arguments,
    publish,
    run_context,
    run_worker,
    summary,
    timing_parser,
    versions_line,
    worker_command,
)
from worker_timing import MD_TIMESTEP_FS

from common import markdown_table  # benchmarks/common.py, on the path through compare

EQCALC_FAMILIES = ["schnet", "painn", "egnn", "nequip", "mace"]  # at their default sizes
# name -> (package, model kwargs, name of the eqcalc model it is compared with)
MODELS = {family: ("eqcalc", {"family": family}, None) for family in EQCALC_FAMILIES}
MODELS["mace 128x(0e+1o)"] = ("eqcalc", PAIRS["mace-128x0e+128x1o"][0], None)
MODELS["MACE 64x0e+64x1o"] = ("mace", PAIRS["mace-64x0e+64x1o"][2], "mace")  # eqcalc mace's default size
MODELS["MACE 128x0e+128x1o"] = ("mace", PAIRS["mace-128x0e+128x1o"][2], "mace 128x(0e+1o)")


def command_for(name: str, structure: Path, dtype: str, args, skin: float | None = None, mode: str = "md") -> list[str]:
    package, model, _ = MODELS[name]
    python = sys.executable if package == "eqcalc" else str(args.venvs / package / "bin" / "python")
    options = argparse.Namespace(**{**vars(args), "skin": args.skin if skin is None else skin})
    return worker_command(python, package, {**model, "avg_num_neighbors": AVG_NUM_NEIGHBORS}, structure, dtype, options, mode=mode)


def run_case(structure: Path, dtype: str, args) -> dict[str, dict]:
    """All models on one (structure, dtype): alternating rounds, then one skin-0 run per eqcalc model."""
    results = {name: {"times": [], "report": None, "error": None, "share": None, "share_no_skin": None} for name in args.models}
    for _ in range(args.rounds):
        for name in args.models:
            if results[name]["error"]:
                continue
            try:
                report = run_worker(command_for(name, structure, dtype, args), args.threads, args.timeout, args.scratch)
            except WorkerFailed as error:
                results[name]["error"] = str(error)
                continue
            results[name]["times"] += report["times_ms"]
            results[name]["report"] = report
    share_args = argparse.Namespace(**{**vars(args), "repeats": args.share_steps})
    for name in args.models:
        for key, skin in (("share", None), ("share_no_skin", 0.0)):
            if MODELS[name][0] != "eqcalc" or results[name]["error"]:
                continue
            # a random walk (0.01 Å rms per step, as the MD): random-weight forces would pull the
            # heavy-mass MD together within a few hundred steps, the walk moves atoms the same way
            command = command_for(name, structure, dtype, share_args, skin=skin, mode="walk")
            try:
                results[name][key] = run_worker(command, args.threads, args.timeout, args.scratch)["neighbour_share"]
            except WorkerFailed as error:
                results[name]["error"] = f"neighbour-list share run (skin {skin}): {error}"
    return results


def rows(system: str, num_atoms: int, dtype: str, results: dict[str, dict]) -> list[list[str]]:
    def percent(share):
        return "—" if share is None else f"{100 * share:.1f}%"

    table = []
    for name, result in results.items():
        if result["error"]:
            table.append([name, system, dtype, "—", f"failed: {result['error']}".replace("|", "/")] + ["—"] * 5)
            continue
        ms = statistics.median(result["times"])
        steps_per_second = 1e3 / ms
        ns_per_day = steps_per_second * 86400 * MD_TIMESTEP_FS * 1e-6
        partner = MODELS[name][2]
        ratio = "—"
        if partner in results and results[partner]["times"]:
            ratio = f"{ms / statistics.median(results[partner]['times']):.2f}"
        table.append([
            name, system, dtype, f"{result['report']['num_params']:,}", summary(result["times"]),
            f"{steps_per_second:.1f}", f"{ns_per_day:.3f}", f"{num_atoms * steps_per_second:,.0f}",
            f"{percent(result['share'])} / {percent(result['share_no_skin'])}", ratio,
        ])  # fmt: skip
    return table


def header(args, all_results: list[dict]) -> str:
    lines = [
        *run_context(args),
        f"- protocol: ASE VelocityVerlet, dt {MD_TIMESTEP_FS} fs, masses ×1e4 so random-weight forces cannot blow the "
        f"system apart (atoms move 0.01 Å rms per step, as in MD); {args.rounds} alternating rounds × {args.repeats} "
        f"timed steps per model after {args.warmup} warm-up steps; random weights; cutoff {args.cutoff} Å; "
        f"eqcalc Verlet skin {args.skin} Å; MACE's calculator rebuilds its neighbour list every step and "
        "always computes the stress",
    ]
    for package in ("eqcalc", "mace"):
        reports = [r[name]["report"] for r in all_results for name in r if MODELS[name][0] == package]
        if reports:
            lines.append(versions_line(package, reports))
    lines.append(
        "- columns: ms per step median (p25–p75); ns/day at 0.5 fs; NL share = neighbour-list time / step time "
        f"with skin / rebuilt every step (eqcalc only; separate {args.share_steps}-step runs); ratio = MACE ms / eqcalc ms of the same size (> 1: eqcalc faster)"
    )
    return "\n".join(lines)


def parse_arguments() -> argparse.Namespace:
    parser = timing_parser(__doc__, rounds=2, repeats=10, output_stem="md_speed")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--share-steps", type=int, default=200, help="MD steps of each neighbour-list share run")
    args = parser.parse_args()
    return checked_arguments(parser, {MODELS[m][0] for m in args.models} - {"eqcalc"}, args)


def main() -> None:
    args = parse_arguments()
    columns = ["model", "system", "dtype", "params", "ms/step", "steps/s", "ns/day", "atom-steps/s",
               "NL share skin / none", "MACE/eqcalc"]  # fmt: skip
    table, all_results = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eqcalc-md-speed-") as scratch:
        args.scratch = Path(scratch)
        for key in args.systems:
            label, build = SYSTEMS[key]
            atoms = build()
            structure = args.scratch / f"{key}.extxyz"
            write(structure, atoms, format="extxyz")
            for dtype in args.dtypes:
                results = run_case(structure, dtype, args)
                all_results.append(results)
                table += rows(label, len(atoms), dtype, results)
                print(f"{label} {dtype} done [{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    publish("MD speed: eqcalc families and MACE through their ASE calculators", header(args, all_results),
            markdown_table(columns, table), args.output, start)


if __name__ == "__main__":
    main()
