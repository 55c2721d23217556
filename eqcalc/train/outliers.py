"""Frames whose labels lie far outside the rest of their file: wrong units, a failed calculation.

Two robust statistics, each in units of a robust standard deviation σ = 1.4826 · MAD (the
median absolute deviation; σ of a normal distribution):

* energy: the per-atom residual (E − Σ_Z n_Z E0_Z) / N, with E0 fitted by least squares to the
  file's own energies and fitted again without the frames flagged by the first fit (one bad frame
  shifts a least-squares E0); its distance from the median residual. Isolated-atom frames are
  left out: their residual is the cohesive energy, far from every other frame by nature.
* forces: the largest force component of a frame, |F|_max, against σ of all components about 0.

A frame is an outlier when either distance exceeds ``threshold`` σ (docs/training.md gives the
distances found in real data sets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.labelled import LabelledStructure
from .statistics import composition_matrix

DEFAULT_THRESHOLD = 50.0
MAD_TO_SIGMA = 1.4826
MIN_FRAMES = 5  # fewer labelled frames give no meaningful spread


@dataclass(frozen=True)
class Outlier:
    """One flagged label: frame ``index`` (0-based, in file order), ``quantity`` "energy" or
    "forces", its ``distance`` from the typical value (eV/atom, or the largest force component
    in eV/Å) and that distance in robust σ (``sigmas``)."""

    index: int
    quantity: str
    distance: float
    sigmas: float

    def describe(self) -> str:
        if self.quantity == "energy":
            return f"frame {self.index}: energy {self.distance:.3g} eV/atom from the others ({self.sigmas:.3g} σ)"
        return f"frame {self.index}: force component of {self.distance:.3g} eV/Å ({self.sigmas:.3g} σ)"


def _robust_distances(values: np.ndarray, centre: float) -> np.ndarray:
    """|values − centre| / σ, σ = 1.4826 · median |values − centre| (inf where σ is 0 and values differ)."""
    deviation = np.abs(values - centre)
    sigma = MAD_TO_SIGMA * float(np.median(deviation))
    if sigma == 0.0:
        return np.where(deviation > 0, np.inf, 0.0)
    return deviation / sigma


def energy_outliers(structures: list[LabelledStructure], threshold: float) -> list[Outlier]:
    """Frames whose per-atom energy residual is more than ``threshold`` σ from the median."""
    rows = [k for k, s in enumerate(structures) if s.energy is not None and not s.is_isolated_atom()]
    if len(rows) < MIN_FRAMES:
        return []
    labelled = [structures[k] for k in rows]
    species = sorted({int(z) for s in labelled for z in s.numbers})
    counts = composition_matrix(labelled, species)
    energies = np.array([s.energy for s in labelled])
    sizes = counts.sum(axis=1)
    kept = np.ones(len(rows), dtype=bool)
    for _ in range(2):  # the second fit leaves out what the first flagged
        e0 = np.linalg.lstsq(counts[kept], energies[kept], rcond=None)[0]
        residual = (energies - counts @ e0) / sizes
        sigmas = _robust_distances(residual, float(np.median(residual[kept])))
        kept = sigmas <= threshold
    centre = float(np.median(residual[kept])) if kept.any() else 0.0
    return [
        Outlier(rows[k], "energy", float(abs(residual[k] - centre)), float(sigmas[k]))
        for k in np.flatnonzero(~kept)
    ]


def force_outliers(structures: list[LabelledStructure], threshold: float) -> list[Outlier]:
    """Frames whose largest force component is more than ``threshold`` σ of all components."""
    rows = [k for k, s in enumerate(structures) if s.forces is not None and s.num_atoms > 0]
    if len(rows) < MIN_FRAMES:
        return []
    components = np.concatenate([np.abs(structures[k].forces).ravel() for k in rows])
    sigma = MAD_TO_SIGMA * float(np.median(components))
    if sigma == 0.0:
        return []
    largest = np.array([np.abs(structures[k].forces).max() for k in rows])
    return [
        Outlier(rows[k], "forces", float(largest[k]), float(largest[k] / sigma))
        for k in np.flatnonzero(largest > threshold * sigma)
    ]


def find_outliers(structures: list[LabelledStructure], threshold: float) -> list[Outlier]:
    """Energy and force outliers of one file's frames, sorted by frame."""
    found = energy_outliers(structures, threshold) + force_outliers(structures, threshold)
    return sorted(found, key=lambda o: (o.index, o.quantity))


def check_outliers(structures: list[LabelledStructure], threshold: float | None, source: str) -> None:
    """ValueError naming the outlier frames of ``source`` (at most five, then a count); nothing
    when ``threshold`` is None."""
    if threshold is None:
        return
    found = find_outliers(structures, threshold)
    if not found:
        return
    listed = "; ".join(o.describe() for o in found[:5])
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    raise ValueError(
        f"{source}: {len(found)} label(s) lie more than {threshold:g} robust standard deviations from the rest "
        f"({listed}{more}). Such values are usually wrong labels (units, a failed calculation): fix or remove "
        "those frames, or raise outlier_threshold (null trains on them as they are)."
    )
