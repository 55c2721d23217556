"""NVT liquid water: 64 H₂O (192 atoms, periodic 12.445 Å box) at 300 K, Langevin, 0.5 fs, with
the PaiNN model trained on the DFT water frames in ../shared/data/water
(configs/benchmarks/water_painn.yaml; the trained file ships here as model.pt). The run starts
from the first DFT frame (start.extxyz: positions and cell only; DeePMD-kit example data,
LGPL-3.0), a liquid configuration, rather than from a built lattice of molecules, which starts
far from equilibrium and out of the training distribution.

Run from the repository root:  python md_runs/nvt_water/run.py [--steps 10000 --equilibration 2000]
Writes md_runs/nvt_water/run/ (config, log.csv, energy/temperature plots; the trajectory is
deleted after analysis unless --keep-trajectory), rdf_oo.png, rdf_oo.csv and results.md
(temperature and energy statistics, the O–O radial distribution function's peaks, steps/s).
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
from eqcalc.md.trajectory import read_trajectory  # noqa: E402

HERE = Path(__file__).resolve().parent
RDF_MAX = 6.0  # Å, below half the box length
RDF_BINS = 120


def oxygen_rdf(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """g_OO(r) averaged over frames of a cubic box, minimum-image distances.

    Args:
        positions: (T, N, 3) Å; numbers: (N,); cell: (T, 3, 3) Å, cubic.
    Returns:
        (bin centres (RDF_BINS,) Å, g(r) (RDF_BINS,)).
    """
    oxygen = numbers == 8
    edges = np.linspace(0.0, RDF_MAX, RDF_BINS + 1)
    counts = np.zeros(RDF_BINS)
    density = 0.0
    for frame, box in zip(positions, cell):
        length = np.diag(box)
        o = frame[oxygen]
        delta = o[:, None, :] - o[None, :, :]
        delta -= length * np.round(delta / length)
        distance = np.linalg.norm(delta, axis=-1)[np.triu_indices(len(o), k=1)]
        counts += 2 * np.histogram(distance, bins=edges)[0]
        density += len(o) / np.prod(length)
    density /= len(positions)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = counts / (len(positions) * oxygen.sum() * density * shell)
    return 0.5 * (edges[1:] + edges[:-1]), g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10000, help="0.5 fs steps")
    parser.add_argument("--equilibration", type=int, default=2000, help="steps left out of the statistics")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-trajectory", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = HERE / "run"
    result = run(read(HERE / "start.extxyz"), HERE / "model.pt", ensemble="nvt", thermostat="langevin", timestep=0.5,
                 steps=args.steps, temperature=300.0, friction=0.01, seed=0, log_interval=20, traj_interval=20,
                 output=folder, overwrite=True, progress=False)  # fmt: skip
    if result.stop_reason:
        raise SystemExit(f"The run stopped early: {result.stop_reason}")

    with open(folder / "log.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) >= args.equilibration]
    temperature = np.array([float(r["temperature_K"]) for r in rows])
    potential = np.array([float(r["epot_eV"]) for r in rows])

    trajectory = read_trajectory(folder / "trajectory.h5")
    sampled = trajectory.step >= args.equilibration
    r, g = oxygen_rdf(trajectory.positions[sampled], trajectory.numbers, trajectory.cell[sampled])
    if not args.keep_trajectory:
        (folder / "trajectory.h5").unlink()

    with open(HERE / "rdf_oo.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["r_A", "g_OO"])
        writer.writerows([[f"{a:.3f}", f"{b:.4f}"] for a, b in zip(r, g)])
    peak = int(np.argmax(g))
    minimum = peak + int(np.argmin(g[peak : peak + int(1.5 / (RDF_MAX / RDF_BINS))]))
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(r, g, lw=1.2)
    axis.axhline(1.0, color="grey", lw=0.5)
    axis.set(xlabel="r (Å)", ylabel="g_OO(r)", title=f"O–O RDF, 64 H₂O, 300 K ({sampled.sum()} frames)")
    figure.tight_layout()
    figure.savefig(HERE / "rdf_oo.png", dpi=120)

    simulated_ps = (args.steps - args.equilibration) * 0.5e-3
    lines = [
        "# NVT water: results",
        "",
        f"Command: `python md_runs/nvt_water/run.py --steps {args.steps} --equilibration {args.equilibration} "
        f"--threads {args.threads}` (torch {torch.__version__}).",
        "",
        f"- sampled: {simulated_ps:.2f} ps after {args.equilibration * 0.5e-3:.2f} ps of equilibration, {sampled.sum()} frames",
        f"- temperature: {temperature.mean():.1f} ± {temperature.std():.1f} K (target 300 K)",
        f"- potential energy: {potential.mean():.3f} eV, std {1e3 * potential.std() / len(trajectory.numbers):.2f} meV/atom",
        f"- O–O RDF first peak: r = {r[peak]:.2f} Å, g = {g[peak]:.2f}; first minimum r = {r[minimum]:.2f} Å, "
        f"g = {g[minimum]:.2f} (experiment, Skinner et al. 2013: 2.80 Å, 2.57; 3.45 Å, 0.84)",
        f"- speed: {result.steps_per_second:.1f} steps/s, {result.ns_per_day:.3f} ns/day at 0.5 fs, "
        f"neighbour list {100 * result.neighbour_fraction:.1f}% of the time, {result.neighbour_rebuilds} rebuilds",
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
