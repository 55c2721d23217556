"""Parity plots (predicted against reference) of energies, forces and stresses, as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ase.units import GPa

from .. import plotting
from ..data.labelled import LabelledStructure
from .evaluate import Prediction


PANELS = {"energy": "eV/atom", "forces": "eV/Å", "stress": "GPa"}


def parity_data(structures: list[LabelledStructure], predictions: list[Prediction]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{quantity: (reference, predicted)} over the labelled entries, in the units of :data:`PANELS`."""
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in PANELS}
    for s, p in zip(structures, predictions):
        if s.energy is not None:
            pairs["energy"].append((np.array([s.energy / s.num_atoms]), np.array([p.energy / s.num_atoms])))
        if s.forces is not None:
            pairs["forces"].append((s.forces.reshape(-1), p.forces.reshape(-1)))
        if s.stress is not None and p.stress is not None:
            pairs["stress"].append((s.stress.reshape(-1) / GPa, p.stress.reshape(-1) / GPa))
    return {
        name: (np.concatenate([r for r, _ in items]), np.concatenate([q for _, q in items]))
        for name, items in pairs.items()
        if items
    }


def write_parity_plot(
    path: str | os.PathLike, structures: list[LabelledStructure], predictions: list[Prediction], title: str = ""
) -> None:
    """One PNG with a panel per labelled quantity; ValueError without matplotlib (the plot was asked for)."""
    if not plotting.available():
        raise ValueError(f"Parity plots need matplotlib: {plotting.INSTALL_HINT}, or leave out --plots.")
    panels = parity_data(structures, predictions)
    if not panels:
        raise ValueError(f"{title or path}: no labels to plot.")
    fig = plotting.new_figure(figsize=(4.2 * len(panels), 4.0))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, (reference, predicted)) in zip(axes[0], panels.items()):
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="0.6", lw=1)
        ax.scatter(reference, predicted, s=4, alpha=0.6)
        mae = np.mean(np.abs(predicted - reference))
        unit = PANELS[name]
        ax.set(xlabel=f"reference {name} ({unit})", ylabel=f"predicted {name} ({unit})", title=f"MAE {mae:.3g} {unit}")
        ax.set_aspect("equal", adjustable="datalim")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
