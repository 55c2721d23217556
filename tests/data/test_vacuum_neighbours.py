"""Neighbour lists bin over the atoms, not the vacuum: same pairs, little memory in huge boxes."""

import resource

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

from eqcalc.data.neighbors import neighbour_list

CUTOFF = 5.0


def pair_set(positions, cell, edge_index, shifts):
    vectors = positions[edge_index[1]] + shifts @ cell - positions[edge_index[0]]
    return sorted(zip(edge_index[0].tolist(), edge_index[1].tolist(), np.round(vectors, 9).tolist()))


def reference(atoms):
    """matscipy on the same structure (its grid spans the whole cell: fine for small cells)."""
    i, j, shifts = matscipy_neighbour_list("ijS", atoms=atoms, cutoff=CUTOFF)
    return pair_set(atoms.positions, atoms.cell.array, np.stack([i, j]), shifts)


def ours(atoms):
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    return pair_set(atoms.positions, atoms.cell.array, edge_index, shifts)


def structures():
    straddling = molecule("CH3CH2OH")
    straddling.cell = [[40, 0, 0], [8, 38, 0], [3, -4, 41]]
    straddling.pbc = True
    straddling.positions += [0.3, 0.2, 0.1]  # around the origin: the molecule straddles the periodic faces
    straddling.wrap()
    centred = molecule("CH3CH2OH", vacuum=20.0)
    centred.pbc = True
    slab = fcc111("Cu", (3, 3, 3), vacuum=25.0, periodic=True)  # periodic vacuum along z
    slab.wrap()
    slab.positions[:, 2] -= 20.0  # straddles the z faces
    slab.wrap()
    crystal = bulk("Si", "diamond", a=5.43).repeat((2, 2, 2))
    crystal.rattle(0.1, seed=3)
    tight = molecule("H2O", vacuum=2.4)  # gap just below the cutoff: images do interact
    tight.pbc = True
    return {"straddling triclinic": straddling, "centred": centred, "slab": slab, "crystal": crystal, "tight": tight}


@pytest.mark.parametrize("name", list(structures()))
def test_pairs_equal_matscipy_on_the_whole_cell(name):
    atoms = structures()[name]
    expected = reference(atoms)
    assert ours(atoms) == expected and len(expected) > 0


def test_molecule_in_a_huge_periodic_box_is_fast_and_small():
    """A 1e5 Å periodic box: matscipy's grid over it takes GBs; binned over the atoms it takes nothing."""
    atoms = molecule("CH3CH2OH")
    small = ours(atoms)  # not periodic at all
    atoms.cell = [1e5, 1e5, 1e5]
    atoms.pbc = True
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert ours(atoms) == small
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: under 200 MiB more
