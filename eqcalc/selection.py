"""Choosing frames to label: uncertain ones, but not many near-copies of one uncertain frame.

Uncertainty of a frame: the largest per-atom force spread of a committee,
``u = max_i forces_std_i`` (eV/Å; :mod:`eqcalc.committee`), computed with a committee or read
from the frames' per-atom ``forces_std`` arrays.

Descriptor of a frame (invariant to rotations, reflections, translations and permutations of
atoms; periodic images counted through :func:`eqcalc.data.neighbors.neighbour_list`): for every
pair of elements {a, b} of the species list, a Gaussian-smeared, cutoff-weighted histogram of the
interatomic distances, per atom of the frame::

    h_ab(r_k) = (1/N) Σ_(i, j, S): {Z_i, Z_j} = {a, b}, r_ijS < r_c   f_c(r_ijS) · exp(−(r_ijS − r_k)² / 2σ²)

over ordered pairs (every pair counted from both ends), with r_k = 0, Δ, 2Δ, … ≤ r_c,
σ = 0.2 Å (:data:`SMEARING`), Δ = σ/2 and the cosine cutoff
f_c(r) = (1 + cos(π r / r_c)) / 2, which makes h continuous as atoms cross r_c and weights the
near neighbours, which set the forces, most. Dividing by the number of atoms N makes it
intensive: a periodic supercell has the descriptor of its cell. Frames of different elements fill
different blocks (a, b) and so lie far apart. σ sets what counts as the same structure: a distance
changing by much less than σ (thermal rattling of MD frames) moves the descriptor a little, one
changing by σ or more (a bond forming or breaking, another phase or density) a lot. Pair
distances do not see bond angles: structures that share their near-neighbour distances (fcc and
hcp packings, say) lie close.

Distance between frames: the Euclidean distance of their descriptors. Only ratios of distances
enter the rule below, so its scale does not matter.

Rule (:func:`greedy_pick`): the candidates are the frames with ``min_uncertainty`` ≤ u ≤
``max_uncertainty`` (each bound optional). The upper bound leaves out frames so far outside the
data that their labels teach little about the structures that matter (a molecule breaking apart
in hot MD). The first pick is the candidate of the largest u; every further pick is the
unpicked candidate of the largest score u · d, d = its distance to the nearest frame already
picked. Ties (equal scores, e.g. all zero) go to the larger u, then the lower index. A near-copy
of a picked frame has d ≈ 0, so it loses to a distinct frame unless the distinct frame is far
less uncertain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_properties

from .data.neighbors import neighbour_list
from .data.readers import FALLBACK_KEYS

SMEARING = 0.2  # Å, σ of the Gaussians; the histogram points are σ/2 apart
DEFAULT_CUTOFF = 5.0  # Å, without a committee
_EDGE_CHUNK = 8192  # pairs smeared at once (bounds the (pairs × bins) temporary)

COMMITTEE_RESULTS = ("energy_std", "forces_std", "stress_std", "energy_committee", "forces_committee")
LABEL_NAMES = tuple(name for names in FALLBACK_KEYS.values() for name in names)  # what readers take as labels
PREDICTION_PREFIX = "eqcalc_"  # eqcalc eval --predictions


@dataclass
class Candidate:
    """One frame read from a file: ``atoms`` is frame ``index`` (0-based, before thinning) of ``source``."""

    atoms: Atoms
    source: str
    index: int


# ---------------------------------------------------------------------------------------------
# descriptor and rule


def species_of(frames: Sequence[Atoms]) -> list[int]:
    """The sorted atomic numbers occurring in ``frames``."""
    return sorted({int(z) for atoms in frames for z in np.unique(atoms.numbers)})


def _check_atoms(frames: Sequence[Atoms]) -> None:
    empty = [k for k, atoms in enumerate(frames) if len(atoms) == 0]
    if empty:
        raise ValueError(f"frame {empty[0]} has no atoms ({len(empty)} such frames); remove them.")


def frame_descriptor(
    atoms: Atoms, cutoff: float = DEFAULT_CUTOFF, species: Sequence[int] | None = None, smearing: float = SMEARING
) -> np.ndarray:
    """The descriptor of the module docstring for one frame.

    Args:
        atoms: a frame with at least one atom (molecule or periodic cell of any shape).
        cutoff: r_c, Å.
        species: atomic numbers that define the blocks (default: the frame's own); compare only
            descriptors made with the same species, cutoff and smearing.
        smearing: σ, Å; the histogram points are Δ = σ/2 apart.

    Returns:
        (P · B,) float64: P = S(S+1)/2 element-pair blocks (pairs a ≤ b of ``species`` in
        order) of B = ⌊r_c/Δ⌋ + 1 histogram values each, neighbours per atom per unit of the
        unnormalised Gaussian.
    """
    if len(atoms) == 0:
        raise ValueError("A frame with no atoms has no descriptor; remove it.")
    if not cutoff > 0:
        raise ValueError(f"The descriptor cutoff must be > 0 Å, got {cutoff!r}.")
    if not smearing > 0:
        raise ValueError(f"The descriptor smearing must be > 0 Å, got {smearing!r}.")
    species = sorted(int(z) for z in (species_of([atoms]) if species is None else species))
    lookup = {z: s for s, z in enumerate(species)}
    unknown = sorted(set(np.unique(atoms.numbers).tolist()) - set(lookup))
    if unknown:
        raise ValueError(f"The frame holds atomic numbers {unknown} outside the species {species}.")
    count = len(species)
    block = np.zeros((count, count), dtype=np.int64)  # (a, b) -> block of the pair {a, b}
    rows, cols = np.triu_indices(count)
    block[rows, cols] = block[cols, rows] = np.arange(len(rows))
    spacing = smearing / 2
    centres = np.arange(int(np.floor(cutoff / spacing + 1e-9)) + 1) * spacing
    histogram = np.zeros((len(rows), len(centres)))

    positions, cell = atoms.positions, atoms.cell.array
    edge_index, shifts = neighbour_list(positions, cell, atoms.pbc, cutoff)
    vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts @ cell
    distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    kinds = np.array([lookup[int(z)] for z in atoms.numbers], dtype=np.int64)
    pair_block = block[kinds[edge_index[0]], kinds[edge_index[1]]]
    weights = 0.5 * (1.0 + np.cos(np.pi * distances / cutoff))
    for start in range(0, len(distances), _EDGE_CHUNK):
        part = slice(start, start + _EDGE_CHUNK)
        smeared = weights[part, None] * np.exp(-0.5 * ((distances[part, None] - centres) / smearing) ** 2)
        one_hot = np.zeros((len(rows), smeared.shape[0]))
        one_hot[pair_block[part], np.arange(smeared.shape[0])] = 1.0
        histogram += one_hot @ smeared
    return histogram.ravel() / len(atoms)


def frame_descriptors(frames: Sequence[Atoms], cutoff: float = DEFAULT_CUTOFF, smearing: float = SMEARING) -> np.ndarray:
    """(F, D) descriptors of ``frames`` on their common species (:func:`frame_descriptor`)."""
    _check_atoms(frames)
    species = species_of(frames)
    return np.stack([frame_descriptor(atoms, cutoff, species, smearing) for atoms in frames])


def in_window(uncertainties: np.ndarray, min_uncertainty: float | None, max_uncertainty: float | None) -> np.ndarray:
    """(F,) bool: min_uncertainty ≤ u ≤ max_uncertainty, a bound of None not applied."""
    u = np.asarray(uncertainties, dtype=np.float64)
    inside = np.ones(u.shape, dtype=bool)
    if min_uncertainty is not None:
        inside &= u >= min_uncertainty
    if max_uncertainty is not None:
        inside &= u <= max_uncertainty
    return inside


def window_text(min_uncertainty: float | None, max_uncertainty: float | None, names: tuple[str, str] | None = None) -> str:
    """The uncertainty window in words: "≥ 0.1 and ≤ 1 eV/Å", or with ``names``
    "≥ min_uncertainty=0.1 and ≤ max_uncertainty=1 eV/Å"."""
    labels = [f"{name}=" for name in names] if names else ["", ""]
    parts = [f"{sign} {label}{value:g}" for sign, label, value in
             zip(("≥", "≤"), labels, (min_uncertainty, max_uncertainty)) if value is not None]
    return " and ".join(parts) + " eV/Å"


def check_request(count: int, total: int, k: int, min_uncertainty: float | None, max_uncertainty: float | None = None,
                  k_name: str = "k", limit_names: tuple[str, str] = ("min_uncertainty", "max_uncertainty")) -> None:
    """ValueError unless 1 ≤ k ≤ count, the candidates inside the uncertainty window (of ``total`` frames)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{k_name} must be a positive integer (frames to pick), got {k!r}.")
    if min_uncertainty is not None and max_uncertainty is not None and min_uncertainty > max_uncertainty:
        raise ValueError(f"{limit_names[0]}={min_uncertainty:g} is above {limit_names[1]}={max_uncertainty:g} eV/Å; "
                         "no frame can be a candidate.")
    if k > count:
        if min_uncertainty is None and max_uncertainty is None:
            raise ValueError(f"{k_name}={k} frames asked for, but there are only {total} candidate frames; ask for fewer.")
        raise ValueError(
            f"{k_name}={k} frames asked for, but only {count} of the {total} candidate frames have an uncertainty "
            f"{window_text(min_uncertainty, max_uncertainty, limit_names)}; ask for fewer or widen the window."
        )


def greedy_pick(
    descriptors: np.ndarray, uncertainties: Sequence[float], k: int, min_uncertainty: float | None = None,
    max_uncertainty: float | None = None,
) -> list[int]:
    """The rule of the module docstring on precomputed descriptors.

    Args:
        descriptors: (F, D) one row per frame (any fixed-length vectors; Euclidean distance).
        uncertainties: (F,) u ≥ 0 per frame, eV/Å.
        k: frames to pick, 1 ≤ k ≤ the candidates.
        min_uncertainty: candidates need u ≥ this (eV/Å); None: no lower bound.
        max_uncertainty: candidates need u ≤ this (eV/Å); None: no upper bound.

    Returns:
        k distinct frame indices in the order picked.
    """
    descriptors = np.asarray(descriptors, dtype=np.float64)
    u = np.asarray(uncertainties, dtype=np.float64).reshape(-1)
    if descriptors.ndim != 2 or descriptors.shape[0] != len(u):
        raise ValueError(f"descriptors of shape {descriptors.shape} do not match {len(u)} uncertainties; need (F, D) and (F,).")
    if not np.isfinite(u).all() or (u < 0).any():
        bad = int(np.flatnonzero(~np.isfinite(u) | (u < 0))[0])
        raise ValueError(f"uncertainties must be finite and ≥ 0 eV/Å; frame {bad} has {u[bad]!r}.")
    candidates = np.flatnonzero(in_window(u, min_uncertainty, max_uncertainty))
    check_request(len(candidates), len(u), k, min_uncertainty, max_uncertainty)
    cu, cd = u[candidates], descriptors[candidates]
    # ties: larger u, then lower index (np.lexsort: last key first)
    rank = np.empty(len(candidates), dtype=np.int64)
    rank[np.lexsort((np.arange(len(candidates)), -cu))] = np.arange(len(candidates))
    picked = [int(np.argmin(rank))]
    nearest = np.linalg.norm(cd - cd[picked[0]], axis=1)
    available = np.ones(len(candidates), dtype=bool)
    available[picked[0]] = False
    while len(picked) < k:
        score = np.where(available, cu * nearest, -np.inf)
        best = np.flatnonzero(score == score.max())
        choice = int(best[np.argmin(rank[best])])
        picked.append(choice)
        available[choice] = False
        nearest = np.minimum(nearest, np.linalg.norm(cd - cd[choice], axis=1))
    return [int(candidates[p]) for p in picked]


def select_frames(
    frames: Sequence[Atoms],
    uncertainties: Sequence[float],
    k: int,
    min_uncertainty: float | None = None,
    cutoff: float = DEFAULT_CUTOFF,
    max_uncertainty: float | None = None,
) -> list[int]:
    """Indices of ``k`` frames to label, in the order picked: uncertain and mutually distinct
    (the descriptor and rule of the module docstring).

    Args:
        frames: F frames, each with at least one atom; compositions and cells may differ.
        uncertainties: (F,) u per frame, eV/Å (e.g. :func:`max_force_std`), finite, ≥ 0.
        k: frames to pick; ValueError unless 1 ≤ k ≤ the candidates.
        min_uncertainty: only frames with u ≥ this (eV/Å) are candidates; None: no lower bound.
        cutoff: r_c of the descriptor, Å (use the committee's cutoff where there is one).
        max_uncertainty: only frames with u ≤ this (eV/Å) are candidates; None: no upper bound.

    Examples:
        >>> from ase.build import molecule
        >>> frames = [molecule("H2O"), molecule("H2O"), molecule("CH4")]
        >>> select_frames(frames, [0.3, 0.3, 0.2], k=2)  # the second water is a copy of the first
        [0, 2]
    """
    frames = list(frames)
    if len(uncertainties) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(uncertainties)} uncertainties; give one per frame.")
    return greedy_pick(frame_descriptors(frames, cutoff), uncertainties, k, min_uncertainty, max_uncertainty)


# ---------------------------------------------------------------------------------------------
# uncertainties


def max_force_std(atoms: Atoms) -> float | None:
    """max_i forces_std_i (eV/Å) from the frame's per-atom ``forces_std`` array (or its
    calculator's ``forces_std`` result), None when it has neither; ValueError for one of the
    wrong shape or with NaN/inf."""
    values = atoms.arrays.get("forces_std")
    if values is None and atoms.calc is not None:
        values = getattr(atoms.calc, "results", {}).get("forces_std")
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(atoms),):
        raise ValueError(f"forces_std has shape {values.shape}, expected ({len(atoms)},): one value per atom, eV/Å.")
    if not np.isfinite(values).all():
        raise ValueError("forces_std holds NaN or inf.")
    return float(values.max())


def stored_uncertainties(candidates: Sequence[Candidate]) -> np.ndarray:
    """(F,) :func:`max_force_std` of each candidate; ValueError naming the first frame without one,
    and the fix."""
    values = []
    for candidate in candidates:
        try:
            value = max_force_std(candidate.atoms)
        except ValueError as err:
            raise ValueError(f"{candidate.source}, frame {candidate.index}: {err}") from None
        if value is None:
            raise ValueError(
                f"{candidate.source}, frame {candidate.index} has no per-atom forces_std array to rank it by: give a "
                "committee with --model M1 M2 … (model files, or one committee folder), or select from the trajectory "
                "of an eqcalc md run with a committee."
            )
        values.append(value)
    return np.array(values, dtype=np.float64)


def committee_calculator(model, device: str = "cpu", dtype: str | None = None):
    """An :class:`eqcalc.EquivariantCalculator` for the committee ``model`` (a list of model files
    or models, or one committee folder, passed on unchanged, or one model file with a fitted
    uncertainty, :mod:`eqcalc.llpr`); ValueError if it gives no force spread to rank by."""
    from .calculator import EquivariantCalculator

    calculator = EquivariantCalculator(model, device=device, dtype=dtype)
    if "forces_std" not in calculator.implemented_properties:
        given = model if isinstance(model, (str, os.PathLike)) else (model[0] if len(model) == 1 else model)
        raise ValueError(
            f"{str(given)!r} is a committee of one model, which has no force spread to rank frames by; give two or "
            "more model files, a committee folder, or a model file with a fitted uncertainty (eqcalc calibrate)."
        )
    return calculator


def committee_uncertainties(candidates: Sequence[Candidate], calculator) -> np.ndarray:
    """(F,) max_i forces_std_i (eV/Å) of each candidate under a committee calculator
    (:func:`committee_calculator`); errors name the frame."""
    values = []
    for candidate in candidates:
        atoms = candidate.atoms.copy()
        atoms.calc = calculator
        try:
            atoms.get_forces()
        except ValueError as err:
            raise ValueError(f"{candidate.source}, frame {candidate.index}: {err}") from None
        spread = np.asarray(calculator.results["forces_std"], dtype=np.float64)
        if not np.isfinite(spread).all():
            raise FloatingPointError(
                f"{candidate.source}, frame {candidate.index}: the committee predicts non-finite forces (NaN or inf); "
                "a model file is damaged or its training diverged."
            )
        values.append(float(spread.max()))
    return np.array(values, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# files


def _hdf5_format(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r", swmr=True) as handle:
            value = handle.attrs.get("format")
    except OSError as err:
        raise ValueError(f"{str(path)!r} is not a readable HDF5 file: {err}") from None
    return value.decode() if isinstance(value, bytes) else value


def read_file_frames(path: str | os.PathLike) -> list[Atoms]:
    """Every frame of ``path``: an eqcalc md trajectory.h5 (positions, cell, its energy and forces
    as a single-point result, ``forces_std`` per atom where the run stored it), an eqcalc
    structures .h5, an ASE database or any file ``ase.io.read`` reads."""
    from .data.readers import HDF5_SUFFIXES, read_frames

    path = Path(path)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return read_frames(path)
    if not path.is_file():
        raise FileNotFoundError(f"Structure file {str(path)!r} does not exist.")
    from .md.trajectory import FORMAT as TRAJECTORY_FORMAT, read_trajectory

    if _hdf5_format(path) != TRAJECTORY_FORMAT:
        from .data.hdf5 import read_hdf5

        return [structure.to_atoms() for structure in read_hdf5(path)]
    trajectory = read_trajectory(path)
    frames = [trajectory.atoms(index) for index in range(len(trajectory))]
    if not frames:
        raise ValueError(f"{str(path)!r} holds no complete frame yet.")
    return frames


def read_candidates(paths: Sequence[str | os.PathLike], every: int = 1) -> list[Candidate]:
    """Frames 0, S, 2S, … (S = ``every``) of each file, in order; ValueError naming a frame with no atoms."""
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}.")
    candidates = []
    for path in paths:
        frames = read_file_frames(path)
        for index in range(0, len(frames), every):
            if len(frames[index]) == 0:
                raise ValueError(f"{str(path)}, frame {index} has no atoms; remove it.")
            candidates.append(Candidate(frames[index], str(path), index))
    return candidates


def _model_output(name: str) -> bool:
    """Whether an info/array entry is a calculator result or a label (a model's or an old reference's)
    that must not travel with a frame sent for labelling."""
    return name in all_properties or name in COMMITTEE_RESULTS or name in LABEL_NAMES or name.startswith(PREDICTION_PREFIX)


def labelling_frame(candidate: Candidate, uncertainty: float) -> Atoms:
    """The candidate as a frame to label: numbers, positions, cell, pbc, its info and per-atom arrays
    except energies, forces, stresses and other calculator results, committee spreads, reference
    labels and eqcalc predictions; no calculator; info ``source`` (file), ``frame`` (index in it)
    and ``max_force_std`` (eV/Å)."""
    atoms = candidate.atoms
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    for name, values in atoms.arrays.items():
        if name not in frame.arrays and not _model_output(name):
            frame.arrays[name] = np.array(values)
    frame.info.update({key: value for key, value in atoms.info.items() if not _model_output(key)})
    frame.info.update(source=candidate.source, frame=int(candidate.index), max_force_std=float(uncertainty))
    return frame


def write_extxyz(path: str | os.PathLike, frames: Sequence[Atoms]) -> None:
    """Write ``frames`` as extxyz, atomically (a temporary file beside ``path``, then os.replace)."""
    import ase.io

    from .atomic_io import atomic_path

    with atomic_path(path) as tmp:
        ase.io.write(tmp, list(frames), format="extxyz")
