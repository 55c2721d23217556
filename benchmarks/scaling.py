"""Scaling with system size: time and peak memory per atom of energy + forces + stress
through EquivariantCalculator, for liquid-water boxes of 192 × repeat³ atoms.

Each (family, size) runs in a fresh subprocess so that its peak RSS is its own: build the
model (float32) and the structure, warm-up calls (the first builds the neighbour list; small
systems get more, up to a few seconds' worth, as the first ~2-4 backward passes are slow), then
the median of five timed calls, each after a small random displacement (0.01 Å rms, so the
skin list is reused). Memory is the peak RSS (ru_maxrss) minus the peak RSS right after the
imports, i.e. what the model, structure, neighbour list and autograd graph add.

A case whose cost, extrapolated from the largest size already measured, would exceed the
memory or time limit is skipped and listed as such instead of run.

    python benchmarks/scaling.py [--families schnet nequip] [--repeats 1 2 3 4 5] [--threads 2] [--label X]
        [--no-reuse-memory] [--max-edges auto|none|N] [--block-slots kernel 4096 none]
        [--max-case-gib 6] [--max-case-seconds 240]

Cases run under the caller's environment, so glibc malloc settings (MALLOC_MMAP_MAX_=0 …)
apply to them; the report lists any MALLOC_* variables. The calculator switches glibc to keeping
freed memory from 1,000 atoms on (its ``reuse_memory``); ``--no-reuse-memory`` turns that off
(each call then page-faults its large buffers in again). ``--max-edges`` is passed to the
calculator (default auto: structures too large for memory are evaluated in chunks; the table
says how many, and for cases large enough to be checked, the peak memory the calculator's fitted
model predicts for the whole graph, next to the measured one); raise ``--max-case-gib`` to let such
cases run. ``--block-slots`` sets how the irreps convolutions run: ``kernel`` (default) the CPU
kernel (calculator kernels=True), otherwise the torch convolutions (kernels=False) with that
block_slots (blocks of centre atoms: a number, auto or none); with several values, each size runs
every value in turn, side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DISPLACEMENT_RMS = 0.01  # Å, per timed call
TIMED_CALLS = 5
WARMUP_SECONDS = 3.0  # keep warming up (MIN_WARMUP to MAX_WARMUP calls) until this much time is spent
MIN_WARMUP, MAX_WARMUP = 2, 5


def measure_case(
    family: str, repeat: int, threads: int, reuse_memory: bool, max_edges: int | str | None, block_slots: int | str | None
) -> dict:
    """Run one case in this process and return its measurements (call in a fresh process)."""
    import numpy as np
    import torch

    import eqcalc
    from eqcalc.data.structures import water_box

    torch.set_num_threads(threads)
    rss_after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    torch.manual_seed(0)
    model = eqcalc.build_model(family, species=[1, 8], cutoff=5.0)
    if block_slots == "kernel":
        calc = eqcalc.EquivariantCalculator(model, dtype="float32", max_edges=max_edges, reuse_memory=reuse_memory)
        assert calc.kernels_in_use or family not in ("nequip", "mace"), "the CPU kernel could not be built"
    else:
        calc = eqcalc.EquivariantCalculator(
            model, dtype="float32", max_edges=max_edges, block_slots=block_slots, kernels=False,
            reuse_memory=reuse_memory,
        )
    atoms = water_box(repeat)
    properties = ["energy", "forces", "stress"]
    rng = np.random.default_rng(0)

    def displace() -> None:
        atoms.positions += rng.normal(scale=DISPLACEMENT_RMS / np.sqrt(3), size=atoms.positions.shape)

    tick = time.perf_counter()
    calc.calculate(atoms, properties)
    first_neighbour_seconds = calc.neighbour_seconds
    warmup_calls = 1
    while warmup_calls < MIN_WARMUP or (time.perf_counter() - tick < WARMUP_SECONDS and warmup_calls < MAX_WARMUP):
        displace()
        calc.calculate(atoms, properties)
        warmup_calls += 1
    times = []
    for _ in range(TIMED_CALLS):
        displace()
        tick = time.perf_counter()
        calc.calculate(atoms, properties)
        times.append(time.perf_counter() - tick)
    return {
        "family": family,
        "atoms": len(atoms),
        "edges": int(calc.neighbours.edge_index.shape[1]),
        "params": sum(p.numel() for p in calc.model.parameters()),
        "chunks": calc.num_chunks,
        # the calculator's fitted memory model (fitted only for "auto" above its check size)
        "predicted_kib": predicted_kib(calc, atoms),
        "ms_per_call": 1e3 * float(np.median(times)),
        "calls": len(times),
        "warmup_calls": warmup_calls,
        "first_neighbour_ms": 1e3 * first_neighbour_seconds,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_after_imports,
        "case_seconds": time.perf_counter() - start,
    }


def calculator_option(text: str) -> int | str | None:
    """A max_edges / block_slots value from the command line: "auto", "none" (None), "kernel"
    (block_slots only) or a number."""
    choice = text.lower()
    return {"auto": "auto", "none": None, "kernel": "kernel"}[choice] if choice in ("auto", "none", "kernel") else int(choice)


def predicted_kib(calc, atoms) -> float | None:
    """The whole graph's peak memory as the calculator's fitted model predicts it (KiB), or None
    where it fitted none (structures below its check size, max_edges not "auto")."""
    from eqcalc.data import atoms_to_graph
    from eqcalc.data.chunks import slot_width

    if calc.evaluation_memory is None:
        return None
    edge_index = atoms_to_graph(atoms, calc.model.cutoff).edge_index.numpy()
    return calc.evaluation_memory.bytes(len(atoms), slot_width(edge_index, len(atoms))) / 1024


def run_in_subprocess(family: str, repeat: int, block_slots: str, args: argparse.Namespace, timeout: float) -> dict:
    """``measure_case`` in a fresh interpreter with the options of ``args``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [sys.executable, __file__, "--case", family, str(repeat), "--threads", str(args.threads),
               "--max-edges", str(args.max_edges), "--block-slots", block_slots]
    command += ["--no-reuse-memory"] if args.no_reuse_memory else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {family} repeat {repeat} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolate(measured: list[dict], num_atoms: int) -> tuple[float, float]:
    """Expected (seconds, peak KiB) of a case of ``num_atoms`` from the largest measured ones.

    Assumes cost per atom keeps growing as it did between the two largest sizes (and does
    not shrink), so superlinear growth is caught before it is run.
    """
    last = measured[-1]
    ratio = num_atoms / last["atoms"]
    if len(measured) == 1:
        return last["case_seconds"] * ratio, last["peak_kib"] * ratio
    previous = measured[-2]
    exponent = math.log(ratio) / math.log(last["atoms"] / previous["atoms"])

    def expected(key: str) -> float:
        growth = (last[key] / last["atoms"]) / (previous[key] / previous["atoms"])
        return last[key] * ratio * max(1.0, growth) ** exponent

    return expected("case_seconds"), expected("peak_kib")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """Two panels: µs per atom and KiB per atom against the number of atoms (log x)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    time_axes, memory_axes = figure.subplots(1, 2)
    for family, cases in results.items():
        atoms = [c["atoms"] for c in cases]
        time_axes.plot(atoms, [1e3 * c["ms_per_call"] / c["atoms"] for c in cases], "o-", label=family)
        memory_axes.plot(atoms, [c["peak_kib"] / c["atoms"] for c in cases], "o-", label=family)
    for axes, label in [(time_axes, "µs per atom (energy+forces+stress)"), (memory_axes, "peak RSS KiB per atom")]:
        axes.set_xscale("log")
        axes.set_ylim(bottom=0)
        axes.set_xlabel("atoms (water box)")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle("eqcalc scaling, float32, CPU")
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["schnet", "nequip"])
    parser.add_argument("--repeats", nargs="+", type=int, default=[1, 2, 3, 4, 5], help="water_box repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--label", default="", help="appended to the output file names, e.g. _malloc-reuse")
    parser.add_argument("--no-reuse-memory", action="store_true", help="calculator reuse_memory=False (see above)")
    parser.add_argument("--max-edges", default="auto", help="calculator max_edges: auto, none or a number")
    parser.add_argument("--block-slots", nargs="+", default=["kernel"],
                        help="kernel (the CPU kernel), or the torch convolutions with block_slots: numbers, auto or none")
    parser.add_argument("--max-case-gib", type=float, default=6.0, help="skip cases expected to need more memory")
    parser.add_argument("--max-case-seconds", type=float, default=240.0, help="skip cases expected to take longer")
    parser.add_argument("--case", nargs=2, metavar=("FAMILY", "REPEAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        max_edges, block_slots = calculator_option(args.max_edges), calculator_option(args.block_slots[0])
        case = measure_case(
            args.case[0], int(args.case[1]), args.threads, not args.no_reuse_memory, max_edges, block_slots
        )
        print(json.dumps(case))
        return

    import torch

    from common import header, markdown_table

    torch.set_num_threads(args.threads)
    rows, results = [], {}
    for family in args.families:
        for repeat in sorted(args.repeats):
            num_atoms = 192 * repeat**3
            for block_slots in args.block_slots:  # side by side at each size
                name = family if len(args.block_slots) == 1 else f"{family}, block_slots {block_slots}"
                measured = results.setdefault(name, [])
                row = [family, block_slots, f"{num_atoms:,}"]
                if measured:
                    seconds, kib = extrapolate(measured, num_atoms)
                    if seconds > args.max_case_seconds or kib > args.max_case_gib * 1024**2:
                        rows.append(row + ["", f"skipped: expected {seconds:.0f} s, {kib / 1024**2:.1f} GiB"] + [""] * 7)
                        print(" | ".join(rows[-1]), flush=True)
                        continue
                case = run_in_subprocess(family, repeat, block_slots, args, timeout=2 * args.max_case_seconds)
                measured.append(case)
                rows.append(
                    row
                    + [f"{case['edges'] / num_atoms:.1f}", f"{case['ms_per_call']:,.1f}",
                       f"{1e3 * case['ms_per_call'] / num_atoms:.1f}", f"{case['warmup_calls']} + {case['calls']}",
                       f"{case['first_neighbour_ms']:,.1f}", f"{case['peak_kib'] / 1024:,.0f}",
                       f"{case['peak_kib'] / num_atoms:.1f}", str(case["chunks"]),
                       "" if case.get("predicted_kib") is None else f"{case['predicted_kib'] / 1024:,.0f}"]
                )
                print(" | ".join(rows[-1]), flush=True)
    columns = ["family", "block_slots", "atoms", "edges/atom (skin list)", "ms/call", "µs/atom", "warm-up + timed calls",
               "first NL build ms", "peak RSS MiB", "KiB/atom", "chunks",
               "predicted whole-graph MiB"]
    stamp = date.today().isoformat() + args.label
    malloc_env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    RESULTS.mkdir(exist_ok=True)
    plot(results, RESULTS / f"scaling_{stamp}.png")
    report = "\n".join(
        [
            header(),
            f"environment: {malloc_env or 'no MALLOC_* variables (glibc malloc defaults)'}; "
            f"calculator reuse_memory: {not args.no_reuse_memory}, max_edges: {args.max_edges}, "
            f"block_slots: {' / '.join(args.block_slots)}",
            f"energy+forces+stress, float32, cutoff 5 Å, skin 0.5 Å, species [1, 8], default hyperparameters; "
            f"median of the timed calls after the warm-up calls, {DISPLACEMENT_RMS} Å rms displacement "
            "before each; each case in a fresh process; memory = peak RSS − peak RSS after imports",
            "",
            markdown_table(columns, rows),
            "",
        ]
    )
    (RESULTS / f"scaling_{stamp}.md").write_text(report)
    print()
    print(report)


if __name__ == "__main__":
    main()
