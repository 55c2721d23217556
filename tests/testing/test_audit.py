"""The audit must pass a correct model and catch a planted symmetry breaking."""

import torch

import eqcalc
from eqcalc.cli import main
from eqcalc.models.schnet import SchNet
from eqcalc.testing.audit import audit_structure
from eqcalc.testing.physics import sample_structures


class DirectionalSchNet(SchNet):
    """SchNet plus a term depending on the x-component of edge vectors: not rotation invariant."""

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        outputs = super().atomic_outputs(species, edge_index, edge_vectors, batch, num_graphs, tables)
        tilt = torch.zeros_like(outputs).index_add_(0, edge_index[0], 1e-3 * edge_vectors[:, 0] ** 2)
        return outputs + tilt


def test_planted_symmetry_breaking_fails_the_audit():
    torch.manual_seed(0)
    model = DirectionalSchNet([1, 6, 8], cutoff=4.0, num_features=8).double()
    result = audit_structure(model, sample_structures([1, 6, 8])["molecule"], "molecule", num_transforms=4)
    assert result.energy_change > 1e-6 and result.force_equivariance > 1e-6
    assert result.force_fd < 1e-6  # forces are still the exact gradient of the (wrong) energy
    assert not result.passed


def test_check_command_passes_a_correct_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=[1, 6, 8], cutoff=4.0, num_features=8, num_interactions=1)
    eqcalc.save_model(model.double(), tmp_path / "model.pt")
    assert main(["check", str(tmp_path / "model.pt"), "--transforms", "4"]) == 0
    out = capsys.readouterr().out
    assert "2 passed, 0 failed" in out and "periodic" in out


def test_perfect_crystal_with_zero_forces_passes_the_check(tmp_path, capsys):
    """Forces of a perfect crystal vanish by symmetry: finite differences are then noise around 0,
    and a purely relative comparison failed healthy models (4.4e-2 'relative' error)."""
    from ase.build import bulk

    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=[29], cutoff=4.0, num_features=8, num_interactions=1).double()
    eqcalc.save_model(model, tmp_path / "cu.pt")
    bulk("Cu", "fcc", a=3.6, cubic=True).write(tmp_path / "cu.extxyz")
    assert main(["check", str(tmp_path / "cu.pt"), str(tmp_path / "cu.extxyz"), "--transforms", "4"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_sample_structures_sit_at_real_bond_lengths():
    """Each atom's nearest neighbour is at 0.85–1.15 × the covalent bond length, for light and heavy
    elements alike (random atoms in a 3 Å box put Ge at half its bond length: a trained Ge model
    then 'failed' NVE by 3e7 eV/atom)."""
    import numpy as np
    from ase.data import covalent_radii

    for species in ([1, 6, 8], [32], [14, 8], [29, 79]):
        for atoms in sample_structures(species).values():
            distances = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
            np.fill_diagonal(distances, np.inf)
            radii = covalent_radii[atoms.numbers]
            ratio = (distances / (radii[:, None] + radii[None, :])).min(axis=1)
            assert np.all(ratio >= 0.85) and np.all(ratio <= 1.15), (species, ratio)
