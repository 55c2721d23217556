"""Energy + forces (+ stress) through EquivariantCalculator: ms per call, atom-steps/s and
the neighbour-list share of a step, with and without skin reuse.

Each call follows an MD-like step: every atom moves by a small random displacement
(0.01 Å rms), so the skin list is reused most steps and rebuilt when it must be.

    python benchmarks/calculator_speed.py [--families schnet nequip ...] [--repeats 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import header, markdown_table

import eqcalc
from eqcalc.data.structures import aspirin, copper_fcc, water_box
from eqcalc.models import MODEL_FAMILIES

SYSTEMS = {"aspirin (21)": aspirin, "water box (192)": water_box, "Cu fcc (256)": copper_fcc}
SPECIES = [1, 6, 8, 29]


def run_case(model, atoms, skin: float, repeats: int, seed: int = 0):
    """Median ms per call and neighbour-list share, along an MD-like random walk."""
    atoms = atoms.copy()
    calc = eqcalc.EquivariantCalculator(model, skin=skin, reuse_memory=True)
    rng = np.random.default_rng(seed)
    properties = ["energy", "forces"] + (["stress"] if atoms.pbc.any() else [])

    def step():
        atoms.positions += rng.normal(scale=0.01 / np.sqrt(3), size=atoms.positions.shape)
        calc.calculate(atoms, properties)

    for _ in range(3):
        step()
    calc.neighbour_seconds, builds = 0.0, calc.neighbours.num_builds
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), calc.neighbour_seconds / sum(times), calc.neighbours.num_builds - builds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=sorted(MODEL_FAMILIES))
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--skin", type=float, default=0.5)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for family in args.families:
        base = eqcalc.build_model(family, species=SPECIES, cutoff=5.0).eval()
        params = sum(p.numel() for p in base.parameters())
        for dtype in args.dtypes:
            model = base.to(getattr(torch, dtype))
            for name, build in SYSTEMS.items():
                atoms = build()
                ms, share, builds = run_case(model, atoms, args.skin, args.repeats)
                ms0, share0, _ = run_case(model, atoms, 0.0, max(5, args.repeats // 3))
                rows.append(
                    [family, f"{params:,}", dtype, name, f"{ms:.1f}", f"{len(atoms) * 1e3 / ms:,.0f}",
                     f"{100 * share:.1f}% ({builds} builds)", f"{ms0:.1f}", f"{100 * share0:.1f}%"]
                )
                print(" | ".join(rows[-1]), flush=True)
    columns = ["family", "params", "dtype", "system", "ms/call (skin)", "atom-steps/s",
               "NL share (skin)", "ms/call (no skin)", "NL share (no skin)"]
    print()
    print(header())
    print(f"repeats: {args.repeats} (skin {args.skin} Å), cutoff 5 Å, energy+forces(+stress for periodic)")
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
