"""eqcalc against MACE and NequIP, side by side: ms per energy+forces(+stress) call through
each package's own ASE calculator, models of matched size with random weights.

For every (pair, system, dtype) the eqcalc worker and the peer worker run alternately in
fresh subprocesses (A B A B …, ``--rounds`` times each), each timing ``--repeats`` calls
after ``--warmup`` untimed ones along the same MD-like random walk (0.01 Å rms per step,
same seed) of the same structure (written once as extxyz). The table gives the median of
all rounds × repeats per side and the ratio peer ms / eqcalc ms (> 1: eqcalc faster).

The peers live in their own venvs (``bash benchmarks/peers/setup_env.sh``); eqcalc runs in
this interpreter's venv. Run from anywhere, on an otherwise idle machine:

    .venv/bin/python benchmarks/peers/compare.py [--rounds 5 --repeats 5] [--pairs ...]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ase.io import write

from eqcalc.atomic_io import atomic_path
from eqcalc.data.structures import aspirin, water_box

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import markdown_table  # noqa: E402  (benchmarks/common.py)

SYSTEMS = {"aspirin": ("aspirin (21)", aspirin), "water": ("water box (192)", water_box)}

# MACE as in its papers' "medium" model and two smaller widths; settings other than the width
# are spelled out on both sides so a changed default cannot silently unmatch the pair.
MACE_COMMON_EQCALC = {"family": "mace", "lmax": 3, "correlation": 3, "num_layers": 2, "num_basis": 8,
                      "radial_hidden": 64, "radial_layers": 3, "readout_hidden": 16}
MACE_COMMON_PEER = {"max_ell": 3, "correlation": 3, "num_interactions": 2, "num_bessel": 8,
                    "radial_MLP": [64, 64, 64], "MLP_irreps": "16x0e"}
NEQUIP_COMMON_EQCALC = {"family": "nequip", "parity": True, "num_basis": 8, "radial_hidden": 64, "radial_layers": 2}
NEQUIP_COMMON_PEER = {"parity": True, "num_bessels": 8, "radial_mlp_width": 64, "radial_mlp_depth": 2}

# name -> (eqcalc build_model kwargs, peer package, peer worker kwargs)
PAIRS = {
    "mace-128x0e+128x1o": (
        {**MACE_COMMON_EQCALC, "num_channels": 128, "max_L": 1}, "mace",
        {**MACE_COMMON_PEER, "hidden_irreps": "128x0e+128x1o"},
    ),
    "mace-64x0e+64x1o": (
        {**MACE_COMMON_EQCALC, "num_channels": 64, "max_L": 1}, "mace",
        {**MACE_COMMON_PEER, "hidden_irreps": "64x0e+64x1o"},
    ),
    "mace-64x0e": (
        {**MACE_COMMON_EQCALC, "num_channels": 64, "max_L": 0}, "mace",
        {**MACE_COMMON_PEER, "hidden_irreps": "64x0e"},
    ),
    "nequip-l1-32x-4L": (
        {**NEQUIP_COMMON_EQCALC, "num_features": 32, "lmax": 1, "num_layers": 4}, "nequip",
        {**NEQUIP_COMMON_PEER, "num_features": 32, "l_max": 1, "num_layers": 4},
    ),
    # nequip's "S" preset: 128x0e+64x1o, 2 layers, no parity, radial MLP 1×128. eqcalc has one
    # multiplicity for every l, so its side is 128x0e+128x1o: larger than the peer's.
    "nequip-S-preset": (
        {"family": "nequip", "num_features": 128, "lmax": 1, "num_layers": 2, "parity": False, "num_basis": 8,
         "radial_hidden": 128, "radial_layers": 1}, "nequip",
        {"preset": "S"},
    ),
}
AVG_NUM_NEIGHBORS = 15.0  # both sides: only keeps random-weight outputs finite, costs nothing


class WorkerFailed(RuntimeError):
    pass


def worker_command(python: str, package: str, model: dict, structure: Path, dtype: str, args, mode: str = "walk") -> list[str]:
    """The command line of one worker run (``mode``: walk of calculate() calls, or md)."""
    return [
        python, str(HERE / f"{package}_worker.py"),
        "--structure", str(structure), "--model", json.dumps(model), "--dtype", dtype,
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--seed", str(args.seed), "--cutoff", str(args.cutoff), "--skin", str(args.skin),
        "--workdir", str(args.scratch), "--mode", mode, *(["--compile"] if package in args.compile else []),
    ]  # fmt: skip


def run_worker(command: list[str], threads: int, timeout: float, command_cwd: Path) -> dict:
    """Run one worker in ``command_cwd``; its last stdout line is its JSON report."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=command_cwd)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"timed out after {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise WorkerFailed(lines[-1] if lines else f"exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(times: list[float]) -> str:
    """'median (p25–p75)' in ms."""
    if len(times) < 2:
        return f"{times[0]:.1f}" if times else "—"
    quartiles = statistics.quantiles(times, n=4, method="inclusive")
    return f"{statistics.median(times):.1f} ({quartiles[0]:.1f}–{quartiles[2]:.1f})"


def run_case(pair: str, structure: Path, dtype: str, args) -> dict:
    """Alternate eqcalc and peer workers for ``args.rounds`` rounds; all per-call times per side."""
    eqcalc_model, peer, peer_model = PAIRS[pair]
    eqcalc_model = {**eqcalc_model, "avg_num_neighbors": AVG_NUM_NEIGHBORS}
    peer_model = {**peer_model, "avg_num_neighbors": AVG_NUM_NEIGHBORS}
    sides = {
        "eqcalc": worker_command(sys.executable, "eqcalc", eqcalc_model, structure, dtype, args),
        peer: worker_command(str(args.venvs / peer / "bin" / "python"), peer, peer_model, structure, dtype, args),
    }
    results = {side: {"times": [], "report": None, "error": None} for side in sides}
    for _ in range(args.rounds):
        for side, command in sides.items():
            if results[side]["error"]:
                continue
            try:
                report = run_worker(command, args.threads, args.timeout, args.scratch)
            except WorkerFailed as error:
                results[side]["error"] = str(error)
                continue
            results[side]["times"] += report["times_ms"]
            results[side]["report"] = report
    return {"peer": peer, "sides": results}


def row(pair: str, system: str, dtype: str, case: dict) -> list[str]:
    eq, peer = case["sides"]["eqcalc"], case["sides"][case["peer"]]

    def cell(side):
        return f"failed: {side['error']}".replace("|", "/") if side["error"] else summary(side["times"])

    def params(side):
        return f"{side['report']['num_params']:,}" if side["report"] else "—"

    ratio = "—"
    if eq["times"] and peer["times"] and not (eq["error"] or peer["error"]):
        ratio = f"{statistics.median(peer['times']) / statistics.median(eq['times']):.2f}"
    return [pair, system, dtype, params(eq), params(peer), cell(eq), cell(peer), ratio]


def versions_line(name: str, reports: list[dict]) -> str:
    """'- <name>: package versions of its venv; the worker's notes'."""
    for report in reports:
        if report:
            versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
            return f"- {name}: {versions}" + (f"; {report['notes']}" if report["notes"] else "")
    return f"- {name}: (no successful run)"


def eqcalc_source() -> str:
    """The eqcalc commit the table was measured on, flagged when the tree had local changes."""
    git = ["git", "-C", str(HERE)]
    try:
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit.strip() + (" + uncommitted changes" if dirty.strip() else "")


def run_context(args) -> list[str]:
    """Report lines every timing table starts with: date, host, command, source, threads, compilation."""
    command = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, host: {platform.node()}, "
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        f"- command: `{command}`",
        f"- eqcalc source: {eqcalc_source()}",
        f"- threads: {args.threads} per process (torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS)",
        f"- torch.compile (on the first, untimed warm-up call): {', '.join(args.compile) or 'none'}; every other "
        "model eager",
    ]


def header(args, cases: list[tuple[str, str, str, dict]]) -> str:
    lines = [
        *run_context(args),
        f"- protocol: {args.rounds} rounds × {args.repeats} timed calls per side after {args.warmup} warm-up calls per "
        f"subprocess, eqcalc and peer alternating; MD-like walk 0.01 Å rms/step, seed {args.seed}; "
        f"cutoff {args.cutoff} Å; energy+forces (+stress for the periodic water box); random weights; "
        f"eqcalc Verlet skin {args.skin} Å (the peers rebuild their neighbour list every call)",
    ]
    packages = ["eqcalc"] + sorted({case["peer"] for *_, case in cases})
    for package in packages:
        reports = [case["sides"][package]["report"] for *_, case in cases if package in case["sides"]]
        lines.append(versions_line(package, reports))
    lines.append("- cells: median ms per call (p25–p75); ratio = peer median / eqcalc median (> 1: eqcalc faster)")
    return "\n".join(lines)


def publish(title: str, header_text: str, table: str, output: Path, start: float) -> None:
    """Write the report (title, header, table) to ``output`` atomically and print it."""
    text = "\n\n".join([f"# {title}", header_text, table]) + "\n"
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    print(text)
    print(f"written to {output} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def timing_parser(description: str, rounds: int, repeats: int, output_stem: str) -> argparse.ArgumentParser:
    """The options every side-by-side timing script shares (systems, dtypes, protocol, venvs, output)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", choices=sorted(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=rounds, help="subprocesses per side per case (alternating)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed calls per subprocess")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per subprocess")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutoff", type=float, default=5.0, help="Å, every model")
    parser.add_argument("--skin", type=float, default=0.5, help="Å, eqcalc's Verlet skin (0: rebuild every call)")
    parser.add_argument("--compile", nargs="*", choices=["eqcalc", "mace"], default=[], metavar="PACKAGE",
                        help="packages whose calculators torch.compile the model: eqcalc (compile=True), mace "
                        "(compile_mode='default'); NequIP's calculator has no such option and stays eager")
    parser.add_argument("--timeout", type=float, default=1800, help="s per worker subprocess")
    parser.add_argument("--venvs", type=Path, default=HERE / ".venv", help="folder holding the peer venvs")
    parser.add_argument("--output", type=Path, help=f"default: benchmarks/results/{output_stem}_<UTC date>.md")
    parser.set_defaults(output_stem=output_stem)
    return parser


def checked_arguments(parser: argparse.ArgumentParser, peers: set[str], args: argparse.Namespace) -> argparse.Namespace:
    """Validate the shared options, check the venvs of ``peers`` exist, fill in the output path."""
    if args.rounds < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--rounds and --repeats must be ≥ 1 and --warmup ≥ 0.")
    missing = [p for p in sorted(peers) if not (args.venvs / p / "bin" / "python").exists()]
    if missing:
        parser.error(f"no venv for {missing} under {args.venvs}; run: bash benchmarks/peers/setup_env.sh {' '.join(missing)}")
    if args.output is None:
        date = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        args.output = HERE.parent / "results" / f"{args.output_stem}_{date}.md"
    return args


def parse_arguments() -> argparse.Namespace:
    parser = timing_parser(__doc__, rounds=5, repeats=5, output_stem="peers")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=list(PAIRS))
    args = parser.parse_args()
    return checked_arguments(parser, {PAIRS[pair][1] for pair in args.pairs}, args)


def main() -> None:
    args = parse_arguments()
    columns = ["pair", "system", "dtype", "eqcalc params", "peer params", "eqcalc ms", "peer ms", "peer/eqcalc"]
    cases = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eqcalc-peers-") as scratch:
        args.scratch = Path(scratch)
        structures = {}
        for key in args.systems:
            structures[key] = args.scratch / f"{key}.extxyz"
            write(structures[key], SYSTEMS[key][1](), format="extxyz")
        for pair in args.pairs:
            for key in args.systems:
                for dtype in args.dtypes:
                    case = run_case(pair, structures[key], dtype, args)
                    cases.append((pair, SYSTEMS[key][0], dtype, case))
                    print(" | ".join(row(*cases[-1])), f"[{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    table = markdown_table(columns, [row(*case) for case in cases])
    publish("eqcalc vs MACE / NequIP: ASE calculator speed", header(args, cases), table, args.output, start)


if __name__ == "__main__":
    main()
