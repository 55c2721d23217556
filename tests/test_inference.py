"""eqcalc.predict: many structures per model call, the calculator's results to round-off."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import eqcalc
from eqcalc import EquivariantCalculator
from eqcalc.inference import predict


def structures():
    ethanol = molecule("CH3CH2OH")
    rattled = ethanol.copy()
    rattled.rattle(0.05, seed=1)
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    crystal.set_cell(crystal.cell.array @ np.array([[1.0, 0.05, 0], [0, 1.0, 0.02], [0, 0, 1.03]]), scale_atoms=True)
    crystal.rattle(0.03, seed=2)
    water = molecule("H2O", cell=np.eye(3) * 4.0, pbc=True)
    return [ethanol, crystal, rattled, water]


@pytest.mark.parametrize("family", ["schnet", "mace"])
def test_predict_equals_the_calculator(family):
    torch.manual_seed(0)
    hyper = {"mace": {"num_channels": 8, "lmax": 2, "max_L": 1}}.get(family, {})
    model = eqcalc.build_model(family, species=["H", "C", "O", "Cu"], cutoff=3.5, **hyper).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for batch_size in (1, 3):
        results = predict(model, structures(), batch_size=batch_size)
        for atoms, result in zip(structures(), results):
            atoms.calc = EquivariantCalculator(model)
            assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12, abs=1e-10)
            np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=0, atol=1e-10)
            np.testing.assert_allclose(result["energies"], atoms.get_potential_energies(), rtol=0, atol=1e-10)
            if atoms.pbc.any():
                np.testing.assert_allclose(result["stress"], atoms.get_stress(), rtol=0, atol=1e-10)
            else:
                assert "stress" not in result
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched


def test_predict_refuses_a_bad_batch_size():
    model = eqcalc.build_model("schnet", species=["H", "O"], num_features=8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict(model, [molecule("H2O")], batch_size=0)
