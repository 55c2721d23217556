"""Geometry and cell relaxation reach the minima of a potential whose minima are known."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read

from eqcalc import EquivariantCalculator
from eqcalc.md import relax


@pytest.mark.parametrize("optimizer", ["BFGS", "LBFGS", "FIRE"])
def test_distorted_molecule_relaxes_to_the_pair_minimum(morse_model, optimizer, tmp_path):
    """A pair potential's 4-atom minimum is the regular tetrahedron with every edge at the pair
    minimum r*; start from a distorted one."""
    distances = torch.linspace(2.0, 4.0, 20001, dtype=torch.float64)
    r_star = float(distances[torch.argmin(morse_model.pair_energy(distances))])
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) * r_star / np.sqrt(8)
    molecule = Atoms("Cu4", positions=corners)
    molecule.rattle(0.15, seed=3)
    molecule.calc = EquivariantCalculator(morse_model)
    start_energy = molecule.get_potential_energy()
    result = relax(molecule, morse_model, fmax=1e-3, optimizer=optimizer, output=tmp_path)
    assert result.converged and result.max_force < 1e-3
    assert result.energy < start_energy
    assert result.pressure is None
    edges = result.atoms.get_all_distances()[np.triu_indices(4, 1)]
    np.testing.assert_allclose(edges, r_star, atol=2e-3)  # grid step 1e-4 Å; fmax 1e-3 eV/Å ≈ 1e-3 Å here
    with pytest.raises(ValueError, match="already holds a relaxation"):
        relax(molecule, morse_model, optimizer=optimizer, output=tmp_path)
    saved = read(tmp_path / "relaxed.extxyz")
    np.testing.assert_allclose(saved.positions, result.atoms.positions, atol=1e-7)
    path = read(tmp_path / "relax_trajectory.extxyz", ":")
    assert len(path) == result.steps + 1
    assert path[-1].get_potential_energy() == pytest.approx(result.energy)
    assert path[0].get_potential_energy() == pytest.approx(start_energy)


def test_strained_cell_relaxes_back(morse_model):
    """The equilibrium lattice constant a0 of the fcc Morse crystal, from a scan of E(a), is
    recovered by a cell relaxation started from a sheared, stretched and rattled cell."""
    lattice = np.linspace(3.1, 3.5, 41)
    calc = EquivariantCalculator(morse_model)
    energies = []
    for a in lattice:
        crystal = bulk("Cu", "fcc", a=a, cubic=True)
        crystal.calc = calc
        energies.append(crystal.get_potential_energy())
    k = int(np.argmin(energies))
    assert 2 < k < len(lattice) - 3
    fit = np.polyfit(lattice[k - 2: k + 3], energies[k - 2: k + 3], 2)
    a0 = -fit[1] / (2 * fit[0])

    strain = np.array([[1.03, 0.01, 0.0], [0.01, 0.98, 0.005], [0.0, 0.005, 1.02]])
    strained = bulk("Cu", "fcc", a=a0, cubic=True)
    strained.set_cell(strained.cell.array @ strain, scale_atoms=True)
    strained.rattle(0.03, seed=2)
    result = relax(strained, morse_model, cell=True, fmax=1e-3)
    assert result.converged
    lengths_angles = result.atoms.cell.cellpar()
    np.testing.assert_allclose(lengths_angles[:3], a0, atol=2e-3)
    np.testing.assert_allclose(lengths_angles[3:], 90.0, atol=0.05)
    assert abs(result.pressure) < 0.05  # GPa; fmax 1e-3 eV on the cell ≈ 1e-3 eV / V0 ≈ 0.005 GPa


def test_cell_relaxation_of_a_molecule_is_refused(morse_model):
    with pytest.raises(ValueError, match="periodic cell"):
        relax(Atoms("Cu2", positions=[[0, 0, 0], [2.5, 0, 0]]), morse_model, cell=True)


def test_relax_command_prints_the_final_cell(cu_model, tmp_path, capsys):
    from ase.io import read

    import eqcalc
    from eqcalc.cli import main

    eqcalc.save_model(cu_model, tmp_path / "cu.pt")
    bulk("Cu", "fcc", a=3.55, cubic=True).write(tmp_path / "cu.extxyz")
    main(["relax", "--model", str(tmp_path / "cu.pt"), "--structure", str(tmp_path / "cu.extxyz"), "--cell",
          "--steps", "20", "--output", str(tmp_path / "relax")])
    out = capsys.readouterr().out
    final = read(tmp_path / "relax" / "relaxed.extxyz")
    a, b, c = final.cell.cellpar()[:3]
    assert f"a {a:.5f}  b {b:.5f}  c {c:.5f} Å" in out and "cell angles" in out and "volume" in out
