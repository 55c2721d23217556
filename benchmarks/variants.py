"""Two ways of evaluating parts of NequIP and MACE, side by side.

--compare pairs: radial MLPs once per pair of reverse edges {i → j, j → i}
(:func:`eqcalc.nn.neighbour_slots.reverse_pairs`) against once per neighbour slot, the
fallback for cells smaller than about 2 r_c, forced here by making the pairing find nothing
(both on the torch path). --compare kernel: the CPU kernels (:mod:`eqcalc.nn.kernels`:
convolution and, for MACE, product basis) against the torch path (both paired, radial MLPs).
--compare product-basis (MACE): the product-basis kernel against its torch path, the
convolution kernel and frozen weights in both. --compare radial-table: the radial MLPs
tabulated as splines against the MLPs, every kernel on and frozen weights in both. The first
variant of each is what :class:`~eqcalc.EquivariantCalculator` runs, except for the pairs
comparison.

Each case times ``compute_properties`` (energy + forces, + stress on the periodic water box)
on a prebuilt graph, the two variants alternating (A B A B …, ``--rounds`` each, ``--repeats``
calls per round after warm-up), eager or through ``torch.compile`` (both variants compiled in
the same process before timing). Ratio = baseline ms / new ms (> 1: the new way is faster).

    python benchmarks/variants.py --compare kernel [--families nequip mace] [--modes eager compiled] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import torch

from common import header, markdown_table

from eqcalc.compilation import compile_model
from eqcalc.data.graph import atoms_to_graph
from eqcalc.data.structures import aspirin, water_box
from eqcalc.models import build_model
from eqcalc.nn import kernels
from eqcalc.properties import compute_properties

FAMILIES = {
    "nequip": {"num_features": 32, "lmax": 1, "num_layers": 4},  # the peers' NequIP size
    "mace": {"num_channels": 64, "max_L": 1},
}
SYSTEMS = {"aspirin (21)": aspirin, "water box (192)": water_box}
CUTOFF = 5.0


@contextlib.contextmanager
def per_slot(model):
    """No edge list is paired (the fallback path), on the torch path."""
    model.set_kernels(False)
    with mock.patch("eqcalc.nn.neighbour_slots.reverse_pairs", lambda edge_index, edge_vectors: None):
        yield


@contextlib.contextmanager
def kernel(model, enabled: bool):
    model.set_kernels(enabled)
    yield


@contextlib.contextmanager
def product_basis_kernel(model, enabled: bool):
    """Every kernel on, the product basis's as ``enabled``; weights frozen (radial tables in both)."""
    model.set_kernels(True)
    for layer in model.layers:
        layer.product_basis.use_kernel = enabled
    yield


@contextlib.contextmanager
def radial_tables(model, enabled: bool):
    """Every kernel on, weights frozen; the convolutions' radial tables (those the frozen model made,
    kept, so that a compiled graph sees the same ones in every round) used or not."""
    model.set_kernels(True)
    if not hasattr(model, "benchmark_tables"):
        model.benchmark_tables = [c.radial_spline for c in model._convolutions()]
    for convolution, table in zip(model._convolutions(), model.benchmark_tables):
        convolution.radial_spline = table if enabled else None
    yield


COMPARISONS = {  # name: {variant: context(model)}, new variant first
    "pairs": {"paired": lambda model: kernel(model, False), "per slot": per_slot},
    "kernel": {"CPU kernels": lambda model: kernel(model, True), "torch": lambda model: kernel(model, False)},
    "product-basis": {
        "kernel": lambda model: product_basis_kernel(model, True),
        "torch": lambda model: product_basis_kernel(model, False),
    },
    "radial-table": {"spline": lambda model: radial_tables(model, True), "MLP": lambda model: radial_tables(model, False)},
}
FROZEN = {"product-basis", "radial-table"}  # comparisons run on frozen weights, as in the calculator


def alternate(evaluate, variants, model, rounds: int, repeats: int, warmup: int) -> dict[str, float]:
    """Median ms of ``evaluate()`` in each variant's context, alternating rounds."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, context in variants.items():
            with context(model):
                for _ in range(warmup):
                    evaluate()
                for _ in range(repeats):
                    start = time.perf_counter()
                    evaluate()
                    times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", required=True, choices=list(COMPARISONS))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = COMPARISONS[args.compare]
    new, baseline = variants
    if args.compare != "pairs" and not kernels.available():
        raise SystemExit("eqcalc's CPU kernels could not be built here (see the warning above).")
    if args.compare == "product-basis" and args.families != ["mace"]:
        raise SystemExit("--compare product-basis is for --families mace.")
    rows = []
    for family in args.families:
        for dtype in args.dtypes:
            torch.manual_seed(0)
            model = build_model(family, species=[1, 6, 8], cutoff=CUTOFF, avg_num_neighbors=15.0, **FAMILIES[family])
            model = model.to(getattr(torch, dtype)).eval().requires_grad_(False)
            if args.compare in FROZEN:
                model.set_kernels(True)  # first: radial tables are made for the kernel path
                model.freeze_weights(True)
            for mode in args.modes:
                energy_model = compile_model(model, torch.device("cpu")) if mode == "compiled" else model
                for system, build in SYSTEMS.items():
                    atoms = build()
                    graph, stress = atoms_to_graph(atoms, CUTOFF), bool(atoms.pbc.any())

                    def evaluate():
                        return compute_properties(energy_model, graph, forces=True, stress=stress)

                    ms = alternate(evaluate, variants, model, args.rounds, args.repeats, args.warmup)
                    rows.append([family, dtype, mode, system, f"{ms[new]:.1f}", f"{ms[baseline]:.1f}",
                                 f"{ms[baseline] / ms[new]:.2f}"])
                    print(" | ".join(rows[-1]), flush=True)
    print()
    print(header())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; cutoff {CUTOFF} Å; {args.rounds} rounds × "
          f"{args.repeats} calls per variant after {args.warmup} warm-up calls per round, alternating")
    columns = ["family", "dtype", "mode", "system", f"{new} ms", f"{baseline} ms", f"{baseline} / {new}"]
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
