"""The loss uses labelled entries only (missing labels are masked, never zero-filled)."""

import numpy as np
import pytest
import torch

import eqcalc
from eqcalc.data.dataset import GraphDataset
from eqcalc.data.labels import collate
from eqcalc.data.readers import read_structures
from eqcalc.properties import compute_properties
from eqcalc.train.loss import WeightedLoss


@pytest.fixture
def model():
    torch.manual_seed(0)
    return eqcalc.build_model("schnet", species=[1, 6, 8, 14], cutoff=3.0, num_features=8, num_interactions=1).double()


def batch_with_gaps(ethanol_file, silicon_file):
    structures = read_structures(ethanol_file)[:3] + read_structures(silicon_file)[5:7]
    structures[1].energy = None
    structures[2].forces = None
    structures[4].stress = None
    return structures, collate([GraphDataset(structures, 3.0)[i] for i in range(len(structures))])


def test_loss_is_the_mean_over_labelled_entries(model, ethanol_file, silicon_file):
    structures, (graph, labels) = batch_with_gaps(ethanol_file, silicon_file)
    predicted = compute_properties(model, graph, stress=True, training=True)
    loss = WeightedLoss(energy_weight=2.0, forces_weight=3.0, stress_weight=5.0)(predicted, labels)
    energy = predicted["energy"].detach().numpy()
    forces = np.split(predicted["forces"].detach().numpy(), np.cumsum([s.num_atoms for s in structures])[:-1])
    stress = predicted["stress"].detach().numpy()
    e = [((energy[k] - s.energy) / s.num_atoms) ** 2 for k, s in enumerate(structures) if s.energy is not None]
    f = np.concatenate([((forces[k] - s.forces) ** 2).ravel() for k, s in enumerate(structures) if s.forces is not None])
    sig = np.concatenate([((stress[k] - s.stress) ** 2).ravel() for k, s in enumerate(structures) if s.stress is not None])
    expected = 2.0 * np.mean(e) + 3.0 * np.mean(f) + 5.0 * np.mean(sig)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_missing_labels_stay_nan_so_an_unmasked_use_would_show(ethanol_file, silicon_file):
    _, (_, labels) = batch_with_gaps(ethanol_file, silicon_file)
    assert torch.isnan(labels.energy[1]) and not labels.has_energy[1]
    assert torch.isnan(labels.forces[~labels.has_forces]).all()
    assert torch.isnan(labels.stress[:3]).all() and labels.has_stress.tolist() == [False, False, False, True, False]


def test_huber_is_half_the_squared_error_well_inside_delta(model, ethanol_file, silicon_file):
    _, (graph, labels) = batch_with_gaps(ethanol_file, silicon_file)
    predicted = compute_properties(model, graph, stress=True)
    mse = WeightedLoss()(predicted, labels)
    huber = WeightedLoss(kind="huber", huber_delta=1e6)(predicted, labels)
    assert float(huber.detach()) == pytest.approx(0.5 * float(mse.detach()), rel=1e-12)


def test_evaluation_keeps_total_energies_in_float64():
    """A 1 µeV error on a −4209.78 eV molecule must survive into the error table (float32 rounds it away)."""
    from eqcalc.train.evaluate import Prediction, _as_batch

    energy = -4209.783833887183 + 1e-6
    batch = _as_batch(Prediction(energy, np.zeros((9, 3)), None))
    assert batch["energy"].dtype == torch.float64 and float(batch["energy"][0]) == energy


def test_a_constant_energy_offset_shows_as_the_mean_signed_error(ethanol_file, silicon_file):
    """Predictions that are the labels + 25 meV per structure: E ME = 25 meV/structure (per atom:
    25/N), equal to the MAE; force errors 0."""
    from eqcalc.train.metrics import ErrorAccumulator

    structures, (_, labels) = batch_with_gaps(ethanol_file, silicon_file)
    energy = torch.nan_to_num(labels.energy) + 0.025
    predicted = {"energy": energy, "forces": torch.nan_to_num(labels.forces), "stress": torch.nan_to_num(labels.stress)}
    errors = ErrorAccumulator()
    errors.update(predicted, labels)
    summary = errors.summary()
    assert summary["e_total_me"] == pytest.approx(25.0) and summary["e_total_mae"] == pytest.approx(25.0)
    per_atom = [25.0 / s.num_atoms for s in structures if s.energy is not None]
    assert summary["e_me"] == pytest.approx(np.mean(per_atom)) and summary["f_mae"] == 0.0
    from eqcalc.train.evaluate import format_error_table

    header, _, row = format_error_table({"data": {"all": {"structures": len(structures), **summary}}}).splitlines()[:3]
    cells = dict(zip(["data"] + [h.strip() for h in header.split("  ") if h.strip()][1:], row.split()))
    assert cells["E/str ME"] == "+25.00" and cells["E/str MAE"] == "25.00"
