"""The thermodynamic log of an MD run (CSV) and its plots (PNG)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .. import plotting
from ..atomic_io import write_csv

COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
PRESSURE_COLUMN = "pressure_GPa"
UNCERTAINTY_COLUMNS = ["max_force_std_eVA", "energy_std_eV"]  # a committee's spread (eqcalc.committee)
UNCERTAINTY_PLOT = "uncertainty.png"


class ThermoLog:
    """Appends one CSV row per logged step, flushed at once.

    Args:
        path: the CSV file.
        periodic: add a pressure column (GPa, including the kinetic term).
        committee: add the committee's spread: max_force_std_eVA (the largest per-atom
            ``forces_std``, eV/Å) and energy_std_eV (eV).
        resume_step: keep an existing file's rows up to this step and append after them;
            None starts a new file.
    """

    def __init__(self, path: str | os.PathLike, periodic: bool, resume_step: int | None = None,
                 committee: bool = False):
        self.path = Path(path)
        self.columns = COLUMNS + ([PRESSURE_COLUMN] if periodic else []) + (UNCERTAINTY_COLUMNS if committee else [])
        kept = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as handle:
                kept = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        write_csv(self.path, self.columns, kept)
        self._handle = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns)

    def write(self, step: int, time: float, epot: float, ekin: float, temperature: float,
              pressure: float | None = None, max_force_std: float | None = None,
              energy_std: float | None = None) -> None:
        """One row: step, time (fs), energies (eV), temperature (K), pressure (GPa) for periodic cells,
        and for a committee the largest per-atom force spread (eV/Å) and the energy spread (eV; an
        empty cell where the uncertainty has none)."""
        row = {"step": step, "time_fs": f"{time:.6g}", "epot_eV": repr(float(epot)), "ekin_eV": repr(float(ekin)),
               "etot_eV": repr(float(epot + ekin)), "temperature_K": f"{temperature:.6g}"}
        if PRESSURE_COLUMN in self.columns:
            row[PRESSURE_COLUMN] = f"{pressure:.6g}"
        if UNCERTAINTY_COLUMNS[0] in self.columns:
            row.update(zip(UNCERTAINTY_COLUMNS, (repr(float(max_force_std)),
                                                 "" if energy_std is None else repr(float(energy_std)))))
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a CSV log as float arrays (NaN for empty cells)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {name: np.array([float(row[name]) if row[name] != "" else np.nan for row in rows]) for name in rows[0]}


def plot_log(path: str | os.PathLike, output_dir: str | os.PathLike,
             force_uncertainty_limit: float | None = None) -> list[Path]:
    """Energy and temperature against time from a CSV log, as energy.png and temperature.png, and
    for a committee's log the largest force spread as uncertainty.png (with the limit
    ``force_uncertainty_limit``, eV/Å, drawn when given); none without matplotlib: :mod:`eqcalc.plotting`."""
    columns = read_log(path)
    if not columns or not plotting.available():
        plotting.new_figure()  # warns once when matplotlib is missing
        return []
    output_dir = Path(output_dir)
    time_ps = columns["time_fs"] / 1000.0
    paths = []
    fig = plotting.new_figure(figsize=(6.4, 5.6))
    axes = fig.subplots(2, 1, sharex=True)
    axes[0].plot(time_ps, columns["etot_eV"], label="total")
    axes[0].plot(time_ps, columns["epot_eV"], label="potential")
    axes[0].set_ylabel("energy (eV)")
    axes[0].legend()
    axes[1].plot(time_ps, columns["ekin_eV"], color="C2")
    axes[1].set_ylabel("kinetic energy (eV)")
    axes[1].set_xlabel("time (ps)")
    fig.tight_layout()
    paths.append(output_dir / "energy.png")
    fig.savefig(paths[-1], dpi=120)
    fig = plotting.new_figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    ax.plot(time_ps, columns["temperature_K"])
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("temperature (K)")
    fig.tight_layout()
    paths.append(output_dir / "temperature.png")
    fig.savefig(paths[-1], dpi=120)
    if UNCERTAINTY_COLUMNS[0] in columns:
        fig = plotting.new_figure(figsize=(6.4, 3.6))
        ax = fig.subplots()
        ax.plot(time_ps, columns[UNCERTAINTY_COLUMNS[0]], label="largest atom")
        if force_uncertainty_limit is not None:
            ax.axhline(force_uncertainty_limit, color="C3", linestyle="--", label="limit")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("committee force spread (eV/Å)")
        ax.legend()
        fig.tight_layout()
        paths.append(output_dir / UNCERTAINTY_PLOT)
        fig.savefig(paths[-1], dpi=120)
    return paths
