"""eqcalc's neighbour list against ASE's reference implementation, and batching."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from eqcalc.data import atoms_to_graph, batch_graphs, neighbour_list


def edge_set(i, j, shifts):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(shifts).tolist())))


def molecule_far_away():
    atoms = molecule("CH3CH2OH")
    atoms.positions += [500.0, -300.0, 1000.0]
    return atoms


def slab_without_c_vector():
    atoms = fcc111("Cu", (2, 2, 3), vacuum=None)  # cell c-vector is zero, pbc (T, T, F)
    atoms.positions[:, 2] += 40.0
    return atoms


def small_triclinic_cell():
    atoms = bulk("Cu", "fcc", a=3.6)  # 1 atom, cell much smaller than the cutoff
    atoms.set_cell(atoms.cell.array + [[0.3, 0.0, 0.1], [0.0, -0.2, 0.0], [0.1, 0.1, 0.0]], scale_atoms=True)
    return atoms


def wire():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.pbc = [True, False, False]
    atoms.cell[1] = atoms.cell[2] = 0.0
    return atoms


CASES = {
    "molecule_no_cell": lambda: molecule("CH3CH2OH"),
    "molecule_far_from_origin": molecule_far_away,
    "slab_zero_c_vector": slab_without_c_vector,
    "small_triclinic_cell": small_triclinic_cell,
    "wire_1d": wire,
    "single_atom": lambda: Atoms("H", positions=[[1.0, 2.0, 3.0]]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_ase(name):
    atoms = CASES[name]()
    cutoff = 5.0
    reference = edge_set(*ase_neighbor_list("ijS", atoms, cutoff))
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert edge_set(edge_index[0], edge_index[1], shifts) == reference
    if name == "small_triclinic_cell":
        assert len(reference) > 40  # many periodic images of the single atom
    if not atoms.pbc.any():
        assert not shifts.any()


def test_periodic_direction_without_lattice_vector_is_an_error():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.cell[2] = 0.0
    with pytest.raises(ValueError, match="periodic directions"):
        neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)


def test_non_finite_positions_are_rejected():
    atoms = molecule("H2O")
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"Atoms \[1\] have NaN"):
        atoms_to_graph(atoms, 5.0)


def test_batch_offsets_atoms_and_structures():
    graphs = [atoms_to_graph(molecule("H2O"), 3.0), atoms_to_graph(small_triclinic_cell(), 3.0), atoms_to_graph(molecule("CH4"), 3.0)]
    batch = batch_graphs(graphs)
    assert batch.num_graphs == 3 and batch.num_atoms == 3 + 1 + 5
    assert batch.batch.tolist() == [0] * 3 + [1] + [2] * 5
    starts = [0, 3, 4]
    pieces = torch.split(batch.edge_index, [g.num_edges for g in graphs], dim=1)
    for graph, start, piece in zip(graphs, starts, pieces):
        assert torch.equal(piece, graph.edge_index + start)
    # edges never connect different structures
    assert torch.equal(batch.batch[batch.edge_index[0]], batch.batch[batch.edge_index[1]])
    assert batch.cell.shape == (3, 3, 3) and batch.positions.dtype == torch.float64


def test_skin_list_survives_small_cell_changes_and_stays_complete():
    """NPT-like steps (small random cell strains with the atoms scaled, plus thermal jitter): the
    reused list, cut at the cutoff, equals a fresh build at every step, with far fewer rebuilds;
    a large strain forces a rebuild."""
    from eqcalc.data.verlet import VerletNeighbourList

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    cutoff, rng = 4.0, np.random.default_rng(1)
    verlet = VerletNeighbourList(cutoff, skin=0.6)
    for step in range(150):
        strain = rng.normal(scale=4e-3, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        positions, cell = atoms.positions, atoms.cell.array
        verlet.update(positions, cell, atoms.pbc, atoms.numbers)
        i, j = verlet.edge_index
        vectors = positions[j] - positions[i] + verlet.shifts @ cell
        keep = np.linalg.norm(vectors, axis=1) < cutoff
        fresh = neighbour_list(positions, cell, atoms.pbc, cutoff)
        assert edge_set(i[keep], j[keep], verlet.shifts[keep]) == edge_set(*fresh[0], fresh[1]), step
    assert verlet.num_builds < 50
    builds = verlet.num_builds
    atoms.set_cell(atoms.cell.array * 0.9, scale_atoms=True)
    assert verlet.update(atoms.positions, atoms.cell.array, atoms.pbc, atoms.numbers)
    assert verlet.num_builds == builds + 1


def test_wrapping_atoms_back_into_the_cell_keeps_the_skin_list():
    """MD with atoms.wrap() after every step (atoms crossing faces of a triclinic, slightly
    straining cell): the reused list equals a fresh build at every step, and it is rebuilt
    exactly as often as a list that follows the same motion unwrapped."""
    from eqcalc.data.verlet import VerletNeighbourList

    atoms = bulk("Cu", "fcc", a=3.6).repeat((3, 3, 3))
    atoms.rattle(0.05, seed=0)
    cutoff, rng = 4.0, np.random.default_rng(2)
    verlet, unwrapped_verlet = VerletNeighbourList(cutoff, skin=1.0), VerletNeighbourList(cutoff, skin=1.0)
    unwrapped = atoms.copy()
    drift = rng.normal(scale=0.02, size=atoms.positions.shape)  # slow collective motion across faces
    wrapped = 0
    for step in range(120):
        strain = rng.normal(scale=1e-3, size=(3, 3))
        cell = atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T))
        motion = drift + rng.normal(scale=0.01, size=atoms.positions.shape)
        for system in (atoms, unwrapped):
            system.set_cell(cell, scale_atoms=True)
            system.positions += motion
        atoms.wrap()
        wrapped += int(np.any(np.abs(atoms.positions - unwrapped.positions) > 1.0))
        positions = atoms.positions
        verlet.update(positions, cell, atoms.pbc, atoms.numbers)
        unwrapped_verlet.update(unwrapped.positions, cell, atoms.pbc, atoms.numbers)
        i, j = verlet.edge_index
        vectors = positions[j] - positions[i] + verlet.shifts @ cell
        keep = np.linalg.norm(vectors, axis=1) < cutoff
        fresh = neighbour_list(positions, cell, atoms.pbc, cutoff)
        assert edge_set(i[keep], j[keep], verlet.shifts[keep]) == edge_set(*fresh[0], fresh[1]), step
    assert wrapped > 100
    assert verlet.num_builds == unwrapped_verlet.num_builds < 30
