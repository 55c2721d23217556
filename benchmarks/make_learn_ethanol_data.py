"""The input files of configs/learn_ethanol_xtb.yaml (and its random-selection twin): rMD17 ethanol
frames relabelled with GFN2-xTB (tblite), so that the initial data, the test data and the loop's
reference calculator agree (rMD17's own labels are PBE/def2-SVP).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/make_learn_ethanol_data.py
    # → runs/data/ethanol_xtb_initial_20.extxyz   20 frames of rMD17 ethanol_train (seeded draw)
    #   runs/data/ethanol_xtb_test_200.extxyz     200 frames of rMD17 ethanol_test (seeded draw)
    OMP_NUM_THREADS=1 .venv/bin/eqcalc learn configs/learn_ethanol_xtb.yaml

Needs tblite (``pip install "eqcalc[xtb]"``) and the rMD17 files (CC0; ../shared/data/rmd17 by
default, ``--source`` elsewhere). Energies in eV, forces in eV/Å, written as extxyz calculator
results; each frame keeps its rMD17 index as info ``md17_index`` (the PBE labels are dropped).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

ROOT = Path(__file__).resolve().parents[1]


def relabelled(frames, method: str):
    from tblite.ase import TBLite

    calculator = TBLite(method=method, verbosity=0)
    out = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calculator
        energy, forces = float(work.get_potential_energy()), work.get_forces().copy()
        frame = atoms.copy()  # positions, numbers and info; the PBE labels stay behind
        frame.info = {key: value for key, value in atoms.info.items() if key == "md17_index"}
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        out.append(frame)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "rmd17"),
                        help="folder with ethanol_train.extxyz and ethanol_test.extxyz (rMD17)")
    parser.add_argument("--output", default=str(ROOT / "runs" / "data"), help="folder for the two files")
    parser.add_argument("--initial", type=int, default=20, help="frames of the initial training data")
    parser.add_argument("--test", type=int, default=200, help="frames of the test data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="GFN2-xTB")
    args = parser.parse_args()
    source, output = Path(args.source), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name, count, label in (("ethanol_train", args.initial, "initial"), ("ethanol_test", args.test, "test")):
        frames = ase.io.read(source / f"{name}.extxyz", ":")
        chosen = sorted(rng.choice(len(frames), size=count, replace=False).tolist())
        path = output / f"ethanol_xtb_{label}_{count}.extxyz"
        ase.io.write(path, relabelled([frames[i] for i in chosen], args.method), format="extxyz")
        print(f"Wrote {path}: {count} frames of {name} labelled with {args.method}.")


if __name__ == "__main__":
    main()
