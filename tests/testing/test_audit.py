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
