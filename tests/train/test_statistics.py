"""Training-set statistics: reference energies, force scale, neighbour count."""

import numpy as np
import pytest

from eqcalc.data.dataset import GraphDataset
from eqcalc.data.labelled import LabelledStructure
from eqcalc.data.readers import read_structures
from eqcalc.train.statistics import compute_statistics, least_squares_atomic_energies

E0 = {1: -13.6, 6: -1027.0, 8: -2038.0}


def synthetic(num: int, seed: int = 0) -> list[LabelledStructure]:
    """Molecules of random H/C/O composition whose energy is exactly Σ_Z n_Z E0_Z."""
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(num):
        numbers = rng.choice(list(E0), size=rng.integers(2, 9))
        positions = rng.uniform(0, 6, size=(len(numbers), 3))
        energy = sum(E0[int(z)] for z in numbers)
        structures.append(LabelledStructure(numbers, positions, np.zeros((3, 3)), [False] * 3, energy=energy))
    return structures


def test_least_squares_recovers_the_element_energies():
    fitted, _ = least_squares_atomic_energies(synthetic(30), [1, 6, 8])
    np.testing.assert_allclose(fitted, [E0[1], E0[6], E0[8]], rtol=0, atol=1e-9)


def test_structures_without_energy_are_left_out_of_the_fit():
    structures = synthetic(30)
    for s in structures[::3]:
        s.energy = None
    structures.append(LabelledStructure([1, 1], [[0, 0, 0], [0, 0, 1]], np.zeros((3, 3)), [False] * 3, forces=np.ones((2, 3))))
    fitted, _ = least_squares_atomic_energies(structures, [1, 6, 8])
    np.testing.assert_allclose(fitted, [E0[1], E0[6], E0[8]], rtol=0, atol=1e-9)


def test_isolated_atoms_win_over_least_squares_when_every_element_has_one():
    isolated = {1: -13.0, 6: -1020.0, 8: -2030.0}  # deliberately not the E0 behind the molecules
    atoms = [
        LabelledStructure([z], [[0, 0, 0]], np.zeros((3, 3)), [False] * 3, energy=e, config_type="IsolatedAtom")
        for z, e in isolated.items()
    ]
    structures = synthetic(20) + atoms
    stats = compute_statistics(GraphDataset(structures, 3.0), [1, 6, 8])
    assert stats.atomic_energies == [isolated[1], isolated[6], isolated[8]]
    assert stats.atomic_energies_source == "isolated atoms"
    partial = compute_statistics(GraphDataset(synthetic(20) + atoms[:2], 3.0), [1, 6, 8])
    assert partial.atomic_energies_source == "least squares"
    with pytest.raises(ValueError, match=r"missing \['O'\]"):
        compute_statistics(GraphDataset(synthetic(20) + atoms[:2], 3.0), [1, 6, 8], atomic_energies="isolated")


def test_given_energies_must_cover_every_element():
    dataset = GraphDataset(synthetic(5), 3.0)
    stats = compute_statistics(dataset, [1, 6, 8], atomic_energies={"H": -1.0, 6: -2.0, "O": -3.0})
    assert stats.atomic_energies == [-1.0, -2.0, -3.0]
    with pytest.raises(ValueError, match=r"lacks the elements \['O'\]"):
        compute_statistics(dataset, [1, 6, 8], atomic_energies={"H": -1.0, "C": -2.0})


def test_force_scale_and_neighbour_count(ethanol_file):
    structures = read_structures(ethanol_file)[:10]
    cutoff = 3.0
    stats = compute_statistics(GraphDataset(structures, cutoff), [1, 6, 8])
    forces = np.concatenate([s.forces for s in structures])
    assert stats.energy_scale == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    pairs = atoms = 0
    for s in structures:  # brute force: ordered pairs within the cutoff of these molecules
        d = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1)
        pairs += np.count_nonzero((d < cutoff) & (d > 0))
        atoms += s.num_atoms
    assert stats.avg_num_neighbors == pytest.approx(pairs / atoms, rel=1e-12)


def test_statistics_reach_the_model(ethanol_file):
    import eqcalc

    stats = compute_statistics(GraphDataset(synthetic(20), 3.0), [1, 6, 8], energy_scale=2.5)
    model = eqcalc.build_model("schnet", cutoff=3.0, num_features=8, num_interactions=1, **stats.model_kwargs())
    assert float(model.energy_scale) == 2.5
    np.testing.assert_allclose(model.element_energies.values.numpy(), [E0[1], E0[6], E0[8]], rtol=0, atol=1e-9)
    assert model.config()["avg_num_neighbors"] == stats.avg_num_neighbors


def test_single_composition_is_flagged_as_underdetermined():
    """Every structure CH4-like: only 1·E0_C + 4·E0_H is fixed by the data; the summary says so."""
    structures = [
        LabelledStructure([6, 1, 1, 1, 1], np.random.default_rng(k).uniform(0, 3, (5, 3)), np.zeros((3, 3)), [False] * 3,
                          energy=E0[6] + 4 * E0[1] + 0.01 * k)
        for k in range(5)
    ]  # fmt: skip
    stats = compute_statistics(GraphDataset(structures, 3.0), [1, 6])
    assert "fix only 1 combination" in stats.atomic_energies_source
    assert stats.atomic_energies[1] + 4 * stats.atomic_energies[0] == pytest.approx(E0[6] + 4 * E0[1] + 0.02)
