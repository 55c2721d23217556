"""eqcalc.predict (batches of structures per model call) against a loop over the ASE calculator,
on the same structures, alternating runs: seconds per structure and the ratio.

    python benchmarks/batch_predict.py [--frames 200] [--repeats 3] [--threads 1]

Structures: rMD17 ethanol frames from tests/data (9 atoms) with the bundled model and a small
random MACE model. Writes benchmarks/results/batch_predict.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import ase.io
import torch

from common import header, markdown_table

import eqcalc
from eqcalc.inference import predict

ROOT = Path(__file__).resolve().parents[1]


def loop(model, frames) -> float:
    calc = eqcalc.EquivariantCalculator(model)
    start = time.perf_counter()
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_forces()
    return time.perf_counter() - start


def batched(model, frames, batch_size) -> float:
    start = time.perf_counter()
    predict(model, frames, batch_size=batch_size)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = ase.io.read(ROOT / "tests" / "data" / "ethanol_small.extxyz", ":")
    frames = (frames * (args.frames // len(frames) + 1))[: args.frames]
    torch.manual_seed(0)
    models = {
        "bundled painn (float32)": eqcalc.load_model(ROOT / "eqcalc" / "assets" / "default_model.pt"),
        "mace 32x0e+32x1o (float64)": eqcalc.build_model(
            "mace", species=["H", "C", "O"], cutoff=5.0, num_channels=32, max_L=1).double(),
    }
    rows = []
    for name, model in models.items():
        loop(model, frames[:5]), batched(model, frames[:5], 4)  # warm-up: kernels, tables
        times = {"calculator loop": [], **{f"predict, batch {b}": [] for b in args.batch_sizes}}
        for _ in range(args.repeats):  # alternating runs
            times["calculator loop"].append(loop(model, frames))
            for b in args.batch_sizes:
                times[f"predict, batch {b}"].append(batched(model, frames, b))
        reference = min(times["calculator loop"])
        for way, values in times.items():
            best = min(values)
            rows.append([name, way, f"{1e3 * best / len(frames):.2f}", f"{reference / best:.2f}"])
    table = markdown_table(["model", "way", "ms per structure", "speed-up over the loop"], rows)
    text = (f"# Batch prediction vs the calculator loop\n\n```\ncommand: python benchmarks/batch_predict.py "
            f"--frames {args.frames} --repeats {args.repeats} --threads {args.threads}\n{header()}\n```\n\n"
            f"{args.frames} ethanol frames (9 atoms), best of {args.repeats} alternating runs.\n\n{table}\n")
    out = ROOT / "benchmarks" / "results" / "batch_predict.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
