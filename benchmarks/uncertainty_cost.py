"""What an uncertainty costs per MD step: one model, the same model with its one-model
uncertainty (LLPR, eqcalc.llpr), and a committee of ``--members`` models, side by side.

Each family's default-sized model (random weights, float64 and float32) on the aspirin molecule
(21 atoms), a 192-atom water box and a 1,536-atom water box: median ms per energy + forces call
along an MD-like random walk (every atom moves 0.01 Å rms per call, skin 0.5 Å), the three
variants alternating in rounds inside one process so load drifts hit them alike. The LLPR is
fitted on rattled copies of the structure labelled by another random model (its calibration is
irrelevant here; its cost is not). Writes benchmarks/results/uncertainty_cost.md.

    OMP_NUM_THREADS=1 flock /tmp/eqcalc-timing.lock .venv/bin/python benchmarks/uncertainty_cost.py [--families painn mace]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from common import header, markdown_table

import eqcalc
from eqcalc.data.structures import aspirin, water_box
from eqcalc.llpr import fit_llpr

HERE = Path(__file__).resolve().parent
SPECIES = [1, 6, 8]
SYSTEMS = {"aspirin (21)": aspirin, "water (192)": water_box, "water (1536)": lambda: water_box(2)}


def labelled_copies(atoms, teacher, count: int, seed: int):
    """``count`` rattled copies of ``atoms`` with ``teacher``'s energy and forces attached."""
    frames = []
    for k in range(count):
        copy = atoms.copy()
        copy.rattle(0.05, seed=seed + k)
        copy.calc = eqcalc.EquivariantCalculator(teacher)
        energy, forces = copy.get_potential_energy(), copy.get_forces()
        copy.calc = SinglePointCalculator(copy, energy=energy, forces=forces)
        frames.append(copy)
    return frames


def walker(calc, atoms, seed: int):
    """One MD-like call: every atom moves 0.01 Å rms, then energy and forces."""
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)

    def step():
        atoms.positions += rng.normal(scale=0.01 / np.sqrt(3), size=atoms.positions.shape)
        calc.calculate(atoms, ["energy", "forces"])

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["painn", "mace"])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant and round")
    parser.add_argument("--out", default=str(HERE / "results" / "uncertainty_cost.md"))
    args = parser.parse_args()
    rows = []
    for family in args.families:
        for dtype in args.dtypes:
            torch.manual_seed(0)
            members = [eqcalc.build_model(family, species=SPECIES, cutoff=5.0).double().eval()
                       for _ in range(args.members)]
            teacher = eqcalc.build_model(family, species=SPECIES, cutoff=5.0).double().eval()
            for name, build in SYSTEMS.items():
                atoms = build()
                fitted = members[0]
                fitted.uncertainty = fit_llpr(fitted, labelled_copies(atoms, teacher, 2, 0),
                                              labelled_copies(atoms, teacher, 1, 100))
                plain = eqcalc.build_model(family, **fitted.config())
                plain.load_state_dict(fitted.state_dict())
                variants = {
                    "model": eqcalc.EquivariantCalculator(plain, dtype=dtype, reuse_memory=True),
                    "model + LLPR": eqcalc.EquivariantCalculator(fitted, dtype=dtype, reuse_memory=True),
                    f"committee of {args.members}": eqcalc.EquivariantCalculator(members, dtype=dtype, reuse_memory=True),
                }
                steps = {key: walker(calc, atoms, seed) for seed, (key, calc) in enumerate(variants.items())}
                times = {key: [] for key in variants}
                for step in steps.values():  # warm-up: first neighbour list, kernels, radial tables
                    step()
                    step()
                for _ in range(args.rounds):
                    for key, step in steps.items():
                        for _ in range(args.repeats):
                            start = time.perf_counter()
                            step()
                            times[key].append(1e3 * (time.perf_counter() - start))
                base = statistics.median(times["model"])
                for key in variants:
                    ms = statistics.median(times[key])
                    rows.append([family, dtype, name, key, f"{ms:.1f}", f"{100 * (ms / base - 1):+.0f}%"])
                    print(" | ".join(rows[-1]), flush=True)
                del fitted.uncertainty
    text = "\n".join([
        "# Cost of an uncertainty per MD step", "", "```", header(),
        f"rounds {args.rounds} x repeats {args.repeats}, variants alternating; default-sized models, random weights",
        "```", "",
        "Median ms per energy+forces call along an MD-like walk; extra = time over the single model.", "",
        markdown_table(["family", "dtype", "system", "variant", "ms/call", "extra"], rows), "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
