"""Cell relaxation of diamond Si with the MACE model trained on mlearn Si
(configs/benchmarks/mlearn_si.yaml; the trained file ships here as model.pt), against the DFT
(PBE, VASP) lattice constant of the training data.

The DFT reference: mlearn's strained "Elastic" frames are a 2×2×2 conventional cell of
10.937 Å strained along x; the unstrained cell gives a_DFT = 5.4685 Å. The uniaxial-strain
series (energy and pressure per frame) ships as dft_uniaxial_strain.csv (mlearn, BSD-3).

Run from the repository root:  python md_runs/si_cell_relax/run.py
Starts from compressed (a = 5.25 Å) and expanded (a = 5.70 Å) 8-atom cells with rattled atoms,
relaxes atoms and cell (FrechetCellFilter, BFGS, fmax 1e-3 eV/Å), and compares the model's
energy and pressure along the DFT uniaxial-strain path. Writes relax_*/ (relaxed structure and
optimisation trajectory, log.csv of energy, force, lattice constant and pressure per step),
uniaxial_strain.png and results.md.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import read  # noqa: E402

from eqcalc import EquivariantCalculator  # noqa: E402
from eqcalc.md import relax  # noqa: E402

HERE = Path(__file__).resolve().parent
A_DFT = 10.937 / 2  # Å, the unstrained 2×2×2 cell of mlearn's Elastic frames
STARTS = {"compressed": 5.25, "expanded": 5.70}  # Å


def uniaxial_cell(a_x: float) -> "bulk":
    """The 64-atom 2×2×2 diamond cell at a_DFT with x stretched to ``a_x`` (Å, whole cell), atoms scaled."""
    atoms = bulk("Si", "diamond", a=A_DFT, cubic=True).repeat(2)
    cell = atoms.cell.array.copy()
    cell[0] *= a_x / cell[0, 0]
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def write_relaxation_log(folder: Path) -> None:
    """folder/log.csv from the optimisation trajectory: step, energy (eV), largest force (eV/Å),
    cubic-equivalent lattice constant V^(1/3) of the 8-atom cell (Å), pressure (GPa)."""
    with open(folder / "log.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "energy_eV", "max_force_eV_A", "a_A", "pressure_GPa"])
        for step, atoms in enumerate(read(folder / "relax_trajectory.extxyz", ":")):
            pressure = -atoms.get_stress()[:3].mean() / units.GPa
            max_force = np.linalg.norm(atoms.get_forces(), axis=1).max()
            writer.writerow([step, f"{atoms.get_potential_energy():.6f}", f"{max_force:.2e}",
                             f"{atoms.get_volume() ** (1 / 3):.5f}", f"{pressure:+.4f}"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = HERE / "model.pt"

    relaxed = {}
    for name, a in STARTS.items():
        start = bulk("Si", "diamond", a=a, cubic=True)
        start.rattle(stdev=0.05, seed=1)
        result = relax(start, model, cell=True, fmax=1e-3, steps=1000, output=HERE / f"relax_{name}",
                       overwrite=True, dtype=args.dtype)  # fmt: skip
        write_relaxation_log(HERE / f"relax_{name}")
        lengths_angles = result.atoms.cell.cellpar()
        relaxed[name] = (a, result, lengths_angles, result.atoms.get_volume() ** (1 / 3))

    with open(HERE / "dft_uniaxial_strain.csv", newline="") as handle:
        dft = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    calc = EquivariantCalculator(model, dtype=args.dtype)
    model_energy, model_pressure = [], []
    for row in dft:
        atoms = uniaxial_cell(row["a_x_A"])
        atoms.calc = calc
        model_energy.append(atoms.get_potential_energy() / len(atoms))
        model_pressure.append(-atoms.get_stress()[:3].mean() / units.GPa)
    strain = np.array([row["strain_xx"] for row in dft])
    dft_energy = np.array([row["energy_per_atom_eV"] for row in dft])
    dft_pressure = np.array([row["pressure_GPa"] for row in dft])
    model_energy, model_pressure = np.array(model_energy), np.array(model_pressure)

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(strain, 1e3 * (dft_energy - dft_energy.min()), "o", label="DFT (mlearn)")
    left.plot(strain, 1e3 * (model_energy - dft_energy.min()), "-", label="eqcalc model")
    left.set(xlabel="uniaxial strain ε_xx", ylabel="E − E_min(DFT) (meV/atom)")
    right.plot(strain, dft_pressure, "o", label="DFT (mlearn)")
    right.plot(strain, model_pressure, "-", label="eqcalc model")
    right.set(xlabel="uniaxial strain ε_xx", ylabel="pressure (GPa)")
    left.legend()
    figure.suptitle("Si, 2×2×2 diamond cell strained along x")
    figure.tight_layout()
    figure.savefig(HERE / "uniaxial_strain.png", dpi=120)

    lines = [
        "# Si cell relaxation: results",
        "",
        f"Command: `python md_runs/si_cell_relax/run.py --dtype {args.dtype}` (torch {torch.__version__}).",
        "",
        f"DFT (PBE) lattice constant of the training data: a = {A_DFT:.4f} Å.",
        "",
        "| start | a start (Å) | a relaxed (Å) | error vs DFT | cell lengths (Å) | angles (°) | steps | max force (eV/Å) | pressure (GPa) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (a, result, cellpar, a_relaxed) in relaxed.items():
        lines.append(
            f"| {name} | {a:.2f} | {a_relaxed:.4f} | {100 * (a_relaxed / A_DFT - 1):+.2f}% | "
            f"{' '.join(f'{x:.4f}' for x in cellpar[:3])} | {' '.join(f'{x:.2f}' for x in cellpar[3:])} | "
            f"{result.steps}{'' if result.converged else ' (not converged)'} | {result.max_force:.1e} | {result.pressure:+.3f} |"
        )
    lines += [
        "",
        "Along the DFT uniaxial-strain path (training frames, so this is the fit, not a test): "
        f"energy MAE {1e3 * np.abs(model_energy - dft_energy).mean():.2f} meV/atom, "
        f"pressure MAE {np.abs(model_pressure - dft_pressure).mean():.3f} GPa (uniaxial_strain.png).",
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
