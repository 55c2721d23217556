"""A pytest base class running the physics checks on a model family.

Subclass it in a test module and set the family and (small) hyper-parameters::

    from eqcalc.testing import ModelPhysicsTests

    class TestMyNequIP(ModelPhysicsTests):
        family = "nequip"
        hyper = {"num_features": 8, "lmax": 2}

Every test builds a model with random weights and random per-element energies,
so a check cannot pass by a trivially zero output.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from ase import Atoms

from ..models import build_model, load_model, save_model
from . import physics

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


class ModelPhysicsTests:
    family: ClassVar[str] = ""
    hyper: ClassVar[dict[str, Any]] = {}
    species: ClassVar[tuple[int, ...]] = (1, 6, 8)
    cutoff: ClassVar[float] = 4.0

    @classmethod
    def build(cls, dtype: torch.dtype = torch.float64, seed: int = 0):
        """A model of ``family`` with random weights and random element energies."""
        torch.manual_seed(seed)
        model = build_model(cls.family, species=list(cls.species), cutoff=cls.cutoff, **cls.hyper)
        return physics.randomize_energy_offsets(model, seed).to(dtype).eval()

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return cls.build(torch.float64)

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls):
        return physics.sample_structures(cls.species)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    def test_symmetry(self, structures, dtype, kind):
        """Energy invariant; forces and stress equivariant under O(3), translations, permutations."""
        model = self.build(dtype)
        errors = physics.symmetry_errors(model, structures[kind], num_transforms=6)
        tolerance = TOLERANCE[dtype]
        assert errors["energy"] < tolerance * physics.energy_tolerance_scale(model, structures[kind]), errors
        assert errors["forces"] < tolerance, errors
        assert errors["stress"] < tolerance, errors

    def test_forces_match_finite_differences(self, model, structures):
        assert physics.force_fd_error(model, structures["molecule"]) < 1e-6
        assert physics.force_fd_error(model, structures["periodic"]) < 1e-6

    def test_stress_matches_finite_differences(self, model, structures):
        assert physics.stress_fd_error(model, structures["periodic"]) < 1e-6

    def test_supercell_is_extensive(self, model, structures):
        errors = physics.supercell_errors(model, structures["periodic"], (2, 2, 2))
        assert errors["energy"] < 1e-10 and errors["forces"] < 1e-10, errors

    def test_smooth_at_cutoff(self, model):
        distances, energies, forces = physics.cutoff_profile(model, numbers=self.species[:2])
        assert np.abs(np.diff(energies)).max() < 1e-8
        # Energy and force are continuous through r_c (steps 1e-5 Å apart) and the force
        # vanishes there: |F| at the last point inside (1e-5 Å from r_c) is ~ F'(r_c)·1e-5.
        assert np.abs(np.diff(forces)).max() < 1e-6
        inside = distances < model.cutoff
        assert abs(forces[inside][-1]) < 1e-6, "force does not go to zero at the cutoff"
        assert np.all(forces[~inside] == 0.0)
        # Far outside the cutoff the dimer is two isolated atoms.
        assert energies[-1] == pytest.approx(float(model.element_energies.values[:2].sum()), abs=1e-12)

    def test_isolated_atom_gives_its_element_energy(self, model):
        for index, z in enumerate(self.species):
            result = physics.evaluate(model, Atoms(numbers=[z], positions=[[1.0, 2.0, 3.0]]))
            assert result["energy"] == float(model.element_energies.values[index])
            assert np.all(result["forces"] == 0.0)

    def test_far_from_origin(self, model, structures):
        molecule = structures["molecule"]
        shifted = molecule.copy()
        shifted.positions += [1000.0, -2000.0, 500.0]
        near, far = physics.evaluate(model, molecule), physics.evaluate(model, shifted)
        assert abs(near["energy"] - far["energy"]) < 1e-9
        np.testing.assert_allclose(near["forces"], far["forces"], atol=1e-9)

    def test_batch_equals_separate(self, model, structures):
        errors = physics.batch_errors(model, [structures["molecule"], structures["periodic"], structures["molecule"][:3]])
        assert errors["energy"] < 1e-10 and errors["forces"] < 1e-10 and errors["stress"] < 1e-12, errors

    def test_float32_model_sums_energies_in_float64(self, structures):
        """Large element energies on a 40-atom cell (E ≈ −4·10⁴ eV): a float32 sum of the per-atom
        energies would round by ~2e-3 eV, while the float32 network itself differs from float64 by
        ~1e-5 of the interaction energy; the bound sits between the two."""
        model64 = self.build(torch.float64)
        with torch.no_grad():
            model64.element_energies.values.sub_(1000.0)
        model32 = copy.deepcopy(model64).to(torch.float32)
        atoms = structures["periodic"].repeat((2, 2, 2))
        e64, e32 = physics.evaluate(model64, atoms)["energy"], physics.evaluate(model32, atoms)["energy"]
        assert abs(e64) > 4e4 and abs(e32 - e64) < 1e-4 * physics.energy_tolerance_scale(model64, atoms)

    def test_save_load_roundtrip(self, tmp_path, structures):
        model = self.build(torch.float32)
        save_model(model, tmp_path / "model.pt")
        loaded = load_model(tmp_path / "model.pt")
        assert loaded.dtype == torch.float32 and loaded.config() == model.config()
        reference = physics.evaluate(model, structures["periodic"])
        again = physics.evaluate(loaded, structures["periodic"])
        assert again["energy"] == reference["energy"]
        np.testing.assert_array_equal(again["forces"], reference["forces"])
        as_float64 = load_model(tmp_path / "model.pt", dtype="float64")
        assert as_float64.dtype == torch.float64
        upcast = physics.evaluate(as_float64, structures["periodic"])
        assert upcast["energy"] == pytest.approx(reference["energy"], rel=1e-5)
