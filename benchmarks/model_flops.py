"""NequIP and MACE model cost: parameters, matmul FLOPs per atom, ms per energy+forces(+stress)
call, achieved GFLOP/s and fraction of the measured 1024² matmul peak.

Times are medians of ``compute_properties`` on a prebuilt graph (no neighbour list):
water box (192 atoms, periodic: energy+forces+stress) and aspirin (21 atoms:
energy+forces). FLOPs are those torch's FlopCounterMode sees in the same call,
forward and backward (matmul-like kernels only; elementwise work is not counted).

With ``--kernels`` the FLOPs are still counted on the torch path (the formulation torch sees),
but the time is that of the CPU kernels with tabulated radial MLPs (what the calculator runs):
the GFLOP/s are then an equivalent rate, the torch formulation's work per kernel-path second
(the kernels skip zero Clebsch–Gordan entries and replace the MLPs by splines, so they do less).

    python benchmarks/model_flops.py [--threads 1] [--repeats 5] [--dtypes float32 float64] [--kernels]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import header, markdown_table, median_ms

from eqcalc.data.graph import atoms_to_graph
from eqcalc.data.structures import aspirin, water_box
from eqcalc.models import build_model
from eqcalc.properties import compute_properties

SIZES = {
    "nequip l_max=1, 32 features, 4 layers": ("nequip", {"num_features": 32, "lmax": 1, "num_layers": 4}),
    "mace medium 128x0e+128x1o, corr 3, 2 layers": ("mace", {"num_channels": 128, "max_L": 1}),
    "mace 64x0e+64x1o": ("mace", {"num_channels": 64, "max_L": 1}),
    "mace 64x0e": ("mace", {"num_channels": 64, "max_L": 0}),
}
SYSTEMS = {"water box (192)": water_box, "aspirin (21)": aspirin}
SPECIES = [1, 6, 8]
CUTOFF = 5.0


def matmul_peak(dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of a size² matmul."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_ms(lambda: a @ b, repeats) / 1e6


def call_flops(evaluate) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        evaluate()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kernels", action="store_true", help="time the CPU-kernel path (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peaks = {name: matmul_peak(getattr(torch, name)) for name in args.dtypes}
    graphs = {name: (atoms_to_graph(build(), CUTOFF), bool(build().pbc.any())) for name, build in SYSTEMS.items()}
    rows = []
    for size in args.sizes:
        family, hyper = SIZES[size]
        torch.manual_seed(0)
        base = build_model(family, species=SPECIES, cutoff=CUTOFF, **hyper)
        params = sum(p.numel() for p in base.parameters())
        for dtype in args.dtypes:
            model = base.to(getattr(torch, dtype)).eval().requires_grad_(False)
            for system, (graph, stress) in graphs.items():
                def evaluate():
                    return compute_properties(model, graph, forces=True, stress=stress)

                flops = call_flops(evaluate)
                if args.kernels and not model.set_kernels(True):
                    raise SystemExit("--kernels: eqcalc's CPU kernels could not be built here")
                model.freeze_weights(args.kernels)  # radial tables for the kernel path
                ms = median_ms(evaluate, args.repeats, warmup=2)
                model.freeze_weights(False)
                model.set_kernels(False)
                gflops = flops / ms / 1e6
                num_atoms = graph.positions.shape[0]
                rows.append(
                    [size, f"{params:,}", dtype, system, f"{flops / num_atoms / 1e6:.1f}", f"{ms:.1f}",
                     f"{gflops:.1f}", f"{gflops / peaks[dtype]:.0%}"]
                )
                print(" | ".join(rows[-1]), flush=True)
    print()
    print(header())
    timed = "CPU kernels + radial tables (FLOPs: torch formulation)" if args.kernels else "torch path"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; cutoff {CUTOFF} Å; repeats {args.repeats}; "
          f"timed: {timed}; "
          + ", ".join(f"1024² matmul peak {name}: {value:.1f} GFLOP/s" for name, value in peaks.items()))
    columns = ["model", "params", "dtype", "system", "MFLOP/atom (fwd+bwd)", "ms/call", "GFLOP/s", "of matmul peak"]
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
