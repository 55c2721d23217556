"""NVE energy conservation of the bundled ethanol model, float32 vs float64, at 0.5 fs.

Run from the repository root:  python md_runs/nve_conservation/run.py [--steps 10000]
Writes md_runs/nve_conservation/{float32,float64}/ (log.csv, plots; trajectories are not kept),
energy_conservation.png and results.md with the drift and fluctuation of E_tot.
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
from ase.io import read  # noqa: E402

from eqcalc.md import run  # noqa: E402
from eqcalc.md.defaults import DEFAULT_MODEL, DEFAULT_STRUCTURE, bundled_asset  # noqa: E402

HERE = Path(__file__).resolve().parent


def conservation(log: Path, num_atoms: int) -> dict:
    """Drift (slope of a linear fit, meV/atom/ps) and fluctuation (std after removing it, meV/atom) of E_tot."""
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    time_ps = np.array([float(r["time_fs"]) for r in rows]) / 1000.0
    total = np.array([float(r["etot_eV"]) for r in rows]) * 1000.0 / num_atoms
    slope, intercept = np.polyfit(time_ps, total, 1)
    residual = total - (slope * time_ps + intercept)
    return {"time_ps": time_ps, "etot": total - total[0], "drift": slope, "fluctuation": residual.std(),
            "temperature": np.mean([float(r["temperature_K"]) for r in rows])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    atoms = read(bundled_asset(DEFAULT_STRUCTURE))
    results = {}
    for dtype in ("float32", "float64"):
        folder = HERE / dtype
        result = run(atoms, bundled_asset(DEFAULT_MODEL), ensemble="nve", timestep=0.5, steps=args.steps,
                     temperature=300.0, seed=1, log_interval=10, traj_interval=args.steps, output=folder,
                     overwrite=True, progress=False, dtype=dtype)
        (folder / "trajectory.h5").unlink()
        results[dtype] = conservation(folder / "log.csv", len(atoms)) | {"steps_per_s": result.steps_per_second}
    figure, axis = plt.subplots(figsize=(7, 4))
    for dtype, r in results.items():
        axis.plot(r["time_ps"], r["etot"], label=f"{dtype}: drift {r['drift']:+.3f} meV/atom/ps", lw=0.8)
    axis.set(xlabel="time (ps)", ylabel="E_tot − E_tot(0) (meV/atom)", title="NVE, ethanol, 0.5 fs, 300 K start")
    axis.legend()
    figure.tight_layout()
    figure.savefig(HERE / "energy_conservation.png", dpi=120)
    lines = [
        f"NVE, bundled ethanol PaiNN model, 0.5 fs, {args.steps} steps ({args.steps * 0.5 / 1000:g} ps), "
        "Maxwell–Boltzmann start at 300 K (seed 1), one torch thread.",
        "",
        "| dtype | drift of E_tot (meV/atom/ps) | fluctuation (meV/atom, std) | mean T (K) | steps/s |",
        "|---|---|---|---|---|",
    ]
    for dtype, r in results.items():
        lines.append(f"| {dtype} | {r['drift']:+.4f} | {r['fluctuation']:.4f} | {r['temperature']:.0f} | {r['steps_per_s']:.0f} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
