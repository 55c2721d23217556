"""Reference data for dipole and polarisability training (docs/responses.md): rMD17 ethanol frames
relabelled with GFN2-xTB (tblite): energy, forces, dipole and polarisability of one method.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/make_ethanol_response_data.py
    # → data/ethanol_gfn2_responses_train.extxyz   500 frames of rMD17 ethanol_train (seeded draw)
    #   data/ethanol_gfn2_responses_test.extxyz    200 frames of rMD17 ethanol_test (seeded draw)

The polarisability α_ij = ∂μ_i/∂E_j is the central finite difference of the GFN2 dipole in a uniform
field of ±``--field`` atomic units along each axis, symmetrised ((α + αᵀ)/2; the asymmetry is
printed). Units: energy eV, forces eV/Å (calculator results), dipole e·Å (calculator result),
polarisability Å³ (info ``polarizability``, 9 values, row-major). Each frame keeps its rMD17 index
as info ``md17_index``. Needs tblite (``pip install "eqcalc[xtb]"``) and the rMD17 files (CC0;
../shared/data/rmd17 by default, ``--source`` elsewhere).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr

ROOT = Path(__file__).resolve().parents[1]


def gfn2_dipole(atoms, method: str, field: np.ndarray | None = None) -> np.ndarray:
    """(3,) dipole, e·Bohr, of ``atoms`` in a uniform field (atomic units) or none."""
    from tblite.interface import Calculator
    from tblite.library import ffi

    calculator = Calculator(method, atoms.numbers, atoms.positions / Bohr)
    calculator.set("verbosity", 0)
    if field is not None:
        calculator.add("electric-field", ffi.new("double[]", [float(x) for x in field]))
    return np.asarray(calculator.singlepoint().get("dipole"))


def gfn2_polarizability(atoms, method: str, field: float) -> tuple[np.ndarray, float]:
    """((3, 3) symmetrised polarisability, Å³; largest |α − αᵀ|/2, Å³) by central differences."""
    columns = [
        (gfn2_dipole(atoms, method, field * axis) - gfn2_dipole(atoms, method, -field * axis)) / (2 * field)
        for axis in np.eye(3)
    ]
    alpha = np.stack(columns, axis=1) * Bohr**3  # alpha[i, j] = dμ_i / dE_j
    return (alpha + alpha.T) / 2, float(np.abs(alpha - alpha.T).max() / 2)


def relabelled(frames, method: str, field: float):
    from tblite.ase import TBLite

    calculator = TBLite(method=method, verbosity=0)
    out, asymmetry = [], 0.0
    for atoms in frames:
        work = atoms.copy()
        work.calc = calculator
        energy, forces = float(work.get_potential_energy()), work.get_forces().copy()
        dipole = work.get_dipole_moment().copy()
        alpha, asymmetric = gfn2_polarizability(atoms, method, field)
        asymmetry = max(asymmetry, asymmetric)
        frame = atoms.copy()  # positions, numbers and info; the PBE labels stay behind
        frame.info = {"md17_index": atoms.info["md17_index"], "polarizability": alpha.reshape(9)}
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, dipole=dipole)
        out.append(frame)
    return out, asymmetry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "rmd17"),
                        help="folder with ethanol_train.extxyz and ethanol_test.extxyz (rMD17)")
    parser.add_argument("--output", default=str(ROOT / "data"), help="folder for the two files")
    parser.add_argument("--train", type=int, default=500, help="frames drawn from ethanol_train")
    parser.add_argument("--test", type=int, default=200, help="frames drawn from ethanol_test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="GFN2-xTB")
    parser.add_argument("--field", type=float, default=1e-4, help="finite-difference field, atomic units")
    args = parser.parse_args()
    source, output = Path(args.source), Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name, count in (("train", args.train), ("test", args.test)):
        frames = ase.io.read(source / f"ethanol_{name}.extxyz", ":")
        chosen = sorted(rng.choice(len(frames), size=count, replace=False).tolist())
        labelled, asymmetry = relabelled([frames[i] for i in chosen], args.method, args.field)
        path = output / f"ethanol_gfn2_responses_{name}.extxyz"
        ase.io.write(path, labelled, format="extxyz")
        print(f"Wrote {path}: {count} frames of ethanol_{name} labelled with {args.method}; largest "
              f"|α − αᵀ|/2 {asymmetry:.2e} Å³.")


if __name__ == "__main__":
    main()
