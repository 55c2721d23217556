"""Milliseconds per training step (energy + force (+ stress) loss, its weight gradients, an Adam
step) on eqcalc's torch path against its CPU kernels, alternating, for MACE and NequIP of the
peer-comparison sizes on a batch of rMD17 ethanol frames and of mlearn Si cells (with stress).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_step.py --threads 1 --dtypes float64 float32

Writes ``benchmarks/results/train_step.md`` (or ``--output``); ``--profile`` also prints the
top operators of one step on each path (torch.profiler).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from ase.io import read
from common import header, markdown_table, median_ms

import eqcalc
from eqcalc.data.graph import atoms_to_graph, batch_graphs
from eqcalc.properties import compute_properties

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MODELS = {
    "mace-32x": ("mace", {"num_channels": 32, "max_L": 1, "lmax": 3, "correlation": 3, "num_layers": 2}),
    "mace-64x0e+64x1o": ("mace", {"num_channels": 64, "max_L": 1, "lmax": 3, "correlation": 3, "num_layers": 2}),
    "nequip-l1-32x-4L": ("nequip", {"num_features": 32, "lmax": 1, "num_layers": 4}),
}
SETS = {  # file, frames per batch (ethanol: batch_size 5 of configs/benchmarks/rmd17_ethanol.yaml)
    "ethanol": (DATA / "rmd17" / "ethanol_train.extxyz", 5),
    "Si": (DATA / "mlearn" / "Si_train.extxyz", 2),
}


def batch(name: str, cutoff: float):
    path, count = SETS[name]
    frames = read(path, index=f":{count}")
    return batch_graphs([atoms_to_graph(atoms, cutoff) for atoms in frames]), bool(frames[0].pbc.any())


def step_function(model, graph, periodic: bool):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)

    def step() -> None:
        optimizer.zero_grad()
        out = compute_properties(model, graph, forces=True, stress=periodic, training=True)
        loss = out["energy"].square().mean() + out["forces"].square().mean()
        if periodic:
            loss = loss + out["stress"].square().mean()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float64"], choices=["float32", "float64"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--rounds", type=int, default=2, help="alternations torch / kernels")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per round")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "train_step.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for set_name in args.sets:
            for model_name in args.models:
                family, hyper = MODELS[model_name]
                torch.manual_seed(0)
                model = eqcalc.build_model(family, species=[1, 6, 8, 14], cutoff=5.0, avg_num_neighbors=15.0, **hyper)
                model = model.to(dtype).train()
                graph, periodic = batch(set_name, 5.0)
                step = step_function(model, graph, periodic)
                times = {False: [], True: []}
                for _ in range(args.rounds):
                    for kernel in (False, True):
                        model.set_kernels(kernel)
                        times[kernel].append(median_ms(step, args.repeats, warmup=1))
                torch_ms, kernel_ms = (statistics.median(times[k]) for k in (False, True))
                rows.append([model_name, set_name, dtype_name, graph.num_atoms, f"{torch_ms:.1f}", f"{kernel_ms:.1f}",
                             f"{torch_ms / kernel_ms:.2f}"])
                print(rows[-1], flush=True)
                if args.profile:
                    for kernel in (False, True):
                        model.set_kernels(kernel)
                        with torch.profiler.profile() as profile:
                            step()
                        print(f"--- {model_name} {set_name} {dtype_name} {'kernels' if kernel else 'torch path'}")
                        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    table = markdown_table(["model", "batch", "dtype", "atoms", "torch path ms", "kernels ms", "speed-up"], rows)
    text = (f"# Training step: torch path against CPU kernels\n\n```\n{header()}\n```\n\n"
            "One step: energy + force (+ stress for Si) loss, backward, Adam; median of "
            f"{args.rounds} alternating rounds × {args.repeats} steps.\n\n{table}\n")
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
