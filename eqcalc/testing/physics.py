"""Physics checks for any eqcalc model, as plain functions returning error sizes.

Each function evaluates a model through the same autograd path the calculator
uses (:func:`eqcalc.properties.compute_properties`) and returns the largest
deviation from what exact physics demands. The test suite asserts on them and
``eqcalc check`` prints them for users' own models.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import covalent_radii

from ..calculator import has_stress
from ..data.graph import atoms_to_graph, batch_graphs
from ..data.neighbors import neighbour_list
from ..models.base import AtomisticModel
from ..properties import compute_properties, compute_properties_and_responses, edge_vectors


def evaluate(model: AtomisticModel, atoms: Atoms, stress: bool | None = None) -> dict:
    """Energy (eV, float), per-atom energies (N,), forces (N, 3) and, for periodic cells, stress (3, 3)."""
    stress = has_stress(atoms) if stress is None else stress
    out = compute_properties(model, atoms_to_graph(atoms, model.cutoff), forces=True, stress=stress)
    result = {
        "energy": float(out["energy"][0].detach()),
        "energies": out["energies"].detach().numpy(),
        "forces": out["forces"].detach().numpy(),
    }
    if stress:
        result["stress"] = out["stress"][0].detach().numpy()
    return result


def model_inputs(model: AtomisticModel, atoms: Atoms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a family's internals take for ``atoms``: species indices (N,), edge_index (2, E)
    and edge vectors (E, 3) in the model dtype; for tests of internal features."""
    graph = atoms_to_graph(atoms, model.cutoff)
    vectors = edge_vectors(graph.positions, graph.cell, graph.edge_index, graph.shifts, graph.batch)
    return model.species_table[graph.numbers], graph.edge_index, vectors.to(model.dtype)


def energy_tolerance_scale(model: AtomisticModel, atoms: Atoms) -> float:
    """max(1 eV, |E − Σ_i E0(Z_i)|): the size of the model's interaction energy, by which absolute
    energy tolerances are scaled (the element reference energies are added exactly in float64)."""
    species = model.species_table[torch.as_tensor(atoms.numbers)]
    references = float(model.element_energies.values.cpu()[species].sum())
    return max(1.0, abs(evaluate(model, atoms, stress=False)["energy"] - references))


def random_orthogonal(rng: np.random.Generator, reflection: bool = False) -> np.ndarray:
    """A Haar-random rotation (det +1), or rotation times inversion (det −1) if ``reflection``."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return -q if reflection else q


def transformed(atoms: Atoms, rotation: np.ndarray, translation: np.ndarray, permutation: np.ndarray) -> Atoms:
    """Copy of ``atoms`` rotated (r → R r), translated, and with atoms reordered by ``permutation``."""
    moved = atoms[permutation]
    moved.set_cell(atoms.cell.array @ rotation.T, scale_atoms=False)
    moved.positions = atoms.positions[permutation] @ rotation.T + translation
    return moved


def random_transforms(atoms: Atoms, num_transforms: int, seed: int):
    """Yield ``num_transforms`` (rotation (3, 3), permutation (N,), transformed copy of ``atoms``):
    seeded random O(3) elements (every second one a reflection), translations and atom orders."""
    rng = np.random.default_rng(seed)
    for k in range(num_transforms):
        rotation = random_orthogonal(rng, reflection=bool(k % 2))
        permutation = rng.permutation(len(atoms))
        yield rotation, permutation, transformed(atoms, rotation, rng.normal(scale=3.0, size=3), permutation)


def symmetry_errors(model: AtomisticModel, atoms: Atoms, num_transforms: int = 10, seed: int = 0) -> dict:
    """Largest |ΔE| (eV), force error (eV/Å) and stress error (eV/Å³) under random
    O(3) elements (half of them reflections), translations and atom permutations."""
    reference = evaluate(model, atoms)
    errors = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for rotation, permutation, moved_atoms in random_transforms(atoms, num_transforms, seed):
        moved = evaluate(model, moved_atoms)
        errors["energy"] = max(errors["energy"], abs(moved["energy"] - reference["energy"]))
        expected_forces = reference["forces"][permutation] @ rotation.T
        errors["forces"] = max(errors["forces"], float(np.abs(moved["forces"] - expected_forces).max(initial=0)))
        if "stress" in reference:
            expected_stress = rotation @ reference["stress"] @ rotation.T
            errors["stress"] = max(errors["stress"], float(np.abs(moved["stress"] - expected_stress).max()))
    return errors


def evaluate_responses(model: AtomisticModel, atoms: Atoms, total_charge: float = 0.0) -> dict:
    """The tensor outputs of a model with heads (:meth:`AtomisticModel.add_outputs`) for one
    structure of total charge ``total_charge`` (e): "charges" (N,), "dipole" (3,) e·Å,
    "polarizability" (3, 3) Å³, those the model has."""
    charge = torch.tensor([total_charge], dtype=torch.float64)
    out = compute_properties_and_responses(model, atoms_to_graph(atoms, model.cutoff), charge, forces=False)
    return {key: out[key].detach().numpy() if key == "charges" else out[key][0].detach().numpy()
            for key in ("charges", "dipole", "polarizability") if key in out}


def response_symmetry_errors(
    model: AtomisticModel, atoms: Atoms, num_transforms: int = 10, seed: int = 0, total_charge: float = 0.0
) -> dict:
    """Largest error of the dipole (e·Å) as a polar vector, μ → R μ, and of the polarisability
    (Å³) as a rank-2 tensor, α → R α Rᵀ, under random O(3) elements (half of them reflections),
    translations and atom permutations."""
    reference = evaluate_responses(model, atoms, total_charge)
    errors = {key: 0.0 for key in reference if key != "charges"}
    for rotation, _, moved in random_transforms(atoms, num_transforms, seed):
        result = evaluate_responses(model, moved, total_charge)
        if "dipole" in errors:
            errors["dipole"] = max(errors["dipole"], float(np.abs(result["dipole"] - rotation @ reference["dipole"]).max()))
        if "polarizability" in errors:
            expected = rotation @ reference["polarizability"] @ rotation.T
            errors["polarizability"] = max(errors["polarizability"], float(np.abs(result["polarizability"] - expected).max()))
    return errors


def _energy(model: AtomisticModel, atoms: Atoms) -> float:
    out = compute_properties(model, atoms_to_graph(atoms, model.cutoff), forces=False)
    return float(out["energy"][0].detach())


def finite_difference_forces(model: AtomisticModel, atoms: Atoms, delta: float = 1e-5) -> np.ndarray:
    """−∂E/∂r by central differences, (N, 3) eV/Å."""
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for a in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, a] += delta
            minus.positions[i, a] -= delta
            forces[i, a] = -(_energy(model, plus) - _energy(model, minus)) / (2 * delta)
    return forces


def finite_difference_stress(model: AtomisticModel, atoms: Atoms, delta: float = 1e-5) -> np.ndarray:
    """(1/V) ∂E/∂ε by central differences of a symmetric strain of cell and positions, (3, 3) eV/Å³."""
    stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            energies = []
            for sign in (1.0, -1.0):
                strain = np.zeros((3, 3))
                strain[a, b] += 0.5 * sign * delta
                strain[b, a] += 0.5 * sign * delta
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=False)
                deformed.positions = atoms.positions @ (np.eye(3) + strain)
                energies.append(_energy(model, deformed))
            stress[a, b] = stress[b, a] = (energies[0] - energies[1]) / (2 * delta)
    return stress / atoms.cell.volume


def relative_error(value: np.ndarray, reference: np.ndarray, floor: float = 1e-12) -> float:
    """max |value − reference| / max(max |reference|, floor): relative, but absolute in units of
    ``floor`` where the reference is (near) zero, as the forces of a perfect crystal are."""
    scale = max(float(np.abs(reference).max(initial=0.0)), floor)
    return float(np.abs(value - reference).max(initial=0.0)) / scale


def force_fd_error(model: AtomisticModel, atoms: Atoms, delta: float = 1e-5, floor: float = 1e-12) -> float:
    """Relative error (see :func:`relative_error`, ``floor`` in eV/Å) of autograd forces against
    central finite differences."""
    return relative_error(
        evaluate(model, atoms, stress=False)["forces"], finite_difference_forces(model, atoms, delta), floor
    )


def stress_fd_error(model: AtomisticModel, atoms: Atoms, delta: float = 1e-5, floor: float = 1e-12) -> float:
    """Relative error (see :func:`relative_error`, ``floor`` in eV/Å³) of autograd stress against
    central finite differences of strain."""
    return relative_error(
        evaluate(model, atoms, stress=True)["stress"], finite_difference_stress(model, atoms, delta), floor
    )


def supercell_errors(model: AtomisticModel, atoms: Atoms, repeat: Sequence[int] = (2, 2, 2)) -> dict:
    """Relative energy error of a supercell against n × E, and force error (eV/Å) against tiled forces."""
    n = int(np.prod(repeat))
    unit = evaluate(model, atoms)
    big = evaluate(model, atoms.repeat(repeat))
    return {
        "energy": abs(big["energy"] - n * unit["energy"]) / max(abs(n * unit["energy"]), 1e-12),
        "forces": float(np.abs(big["forces"] - np.tile(unit["forces"], (n, 1))).max()),
    }


def cutoff_profile(
    model: AtomisticModel, numbers: Sequence[int] = (1, 1), width: float = 1e-3, num_points: int = 201
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy and pair force of a dimer as its distance sweeps r_c ± width.

    Returns distances (M,), energies (M,) eV and the force on atom 1 along the bond (M,) eV/Å.
    """
    distances = model.cutoff + np.linspace(-width, width, num_points)
    energies, forces = [], []
    for d in distances:
        dimer = Atoms(numbers=list(numbers), positions=[[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
        result = evaluate(model, dimer, stress=False)
        energies.append(result["energy"])
        forces.append(result["forces"][1, 0])
    return distances, np.array(energies), np.array(forces)


def batch_errors(model: AtomisticModel, structures: Sequence[Atoms]) -> dict:
    """Largest energy (eV), force (eV/Å) and stress (eV/Å³, periodic structures) difference between
    one batched pass and separate passes."""
    graphs = [atoms_to_graph(atoms, model.cutoff) for atoms in structures]
    batched = compute_properties(model, batch_graphs(graphs), forces=True, stress=True)
    separate = [evaluate(model, atoms) for atoms in structures]
    energy = np.array([s["energy"] for s in separate])
    forces = np.concatenate([s["forces"] for s in separate])
    stress = [
        float(np.abs(batched["stress"][k].detach().numpy() - s["stress"]).max())
        for k, s in enumerate(separate)
        if "stress" in s
    ]
    return {
        "energy": float(np.abs(batched["energy"].detach().numpy() - energy).max()),
        "forces": float(np.abs(batched["forces"].detach().numpy() - forces).max()),
        "stress": max(stress, default=0.0),
    }


MIN_SAMPLE_DISTANCE = 0.9  # Å


def sample_structures(species: Sequence[int], seed: int = 0) -> dict[str, Atoms]:
    """Small structures for checks, made of ``species`` at their real bond lengths (so a trained
    model sees something like its data): a 7-atom molecule, and a skewed 5-atom periodic cell
    smaller than typical cutoffs (so many images enter). Bonds are the sums of ASE's covalent
    radii × 0.95–1.15; no pair (images included) is closer than 0.85 × its bond length or
    :data:`MIN_SAMPLE_DISTANCE`."""
    rng = np.random.default_rng(seed)
    species = list(species)
    molecule = Atoms(numbers=[species[k % len(species)] for k in range(7)])
    numbers = [species[k % len(species)] for k in range(5)]
    bond = float(np.mean(covalent_radii[numbers])) * 2.0
    cell = (5 * 8.0 * bond**3) ** (1 / 3) * (np.eye(3) + 0.15 * rng.uniform(-1, 1, (3, 3)))
    crystal = Atoms(numbers=numbers, cell=cell, pbc=True)
    return {"molecule": _grown(rng, molecule), "periodic": _grown(rng, crystal)}


def _grown(rng: np.random.Generator, atoms: Atoms, tries: int = 10000) -> Atoms:
    """``atoms`` with positions grown atom by atom, each bonded to a random earlier one."""
    radii = covalent_radii[atoms.numbers]
    for _ in range(tries):
        positions = np.zeros((len(atoms), 3))
        positions[0] = atoms.cell.array.sum(axis=0) / 2
        for k in range(1, len(atoms)):
            partner = rng.integers(k)
            direction = rng.normal(size=3)
            length = (radii[k] + radii[partner]) * rng.uniform(0.95, 1.15)
            positions[k] = positions[partner] + length * direction / np.linalg.norm(direction)
        atoms.positions = positions
        reach = max(2.0 * float(radii.max()), MIN_SAMPLE_DISTANCE)
        edge_index, shifts = neighbour_list(positions, atoms.cell.array, atoms.pbc, reach)
        i, j = edge_index
        distances = np.linalg.norm(positions[j] + shifts @ atoms.cell.array - positions[i], axis=1)
        if np.all(distances >= np.maximum(0.85 * (radii[i] + radii[j]), MIN_SAMPLE_DISTANCE)):
            return atoms
    raise RuntimeError(f"could not place {atoms.get_chemical_formula()} without close contacts")


def randomize_energy_offsets(model: AtomisticModel, seed: int = 0) -> AtomisticModel:
    """Give a model non-trivial per-element energies and scale (checks must not pass by zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        values = -10.0 * torch.rand(model.num_species, generator=generator, dtype=torch.float64) - 1.0
        model.element_energies.values.copy_(values)
        model.energy_scale.fill_(0.5 + float(torch.rand(1, generator=generator)))
    return model
