"""EquivariantCalculator: ASE integration, stress conventions, skin reuse, bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress
from ase.calculators.test import gradient_test
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

import eqcalc
from eqcalc import EquivariantCalculator
from eqcalc.data import atoms_to_graph
from eqcalc.data.structures import water_box
from eqcalc.models import ModelFileError
from eqcalc.properties import compute_properties


def test_results_match_the_autograd_path(schnet64, triclinic_cu):
    triclinic_cu.calc = EquivariantCalculator(schnet64)
    direct = compute_properties(schnet64, atoms_to_graph(triclinic_cu, schnet64.cutoff), stress=True)
    assert triclinic_cu.get_potential_energy() == float(direct["energy"][0].detach())
    assert triclinic_cu.get_potential_energy(force_consistent=True) == triclinic_cu.get_potential_energy()
    np.testing.assert_allclose(triclinic_cu.get_potential_energies().sum(), triclinic_cu.get_potential_energy(), rtol=1e-14)
    np.testing.assert_array_equal(triclinic_cu.get_forces(), direct["forces"].numpy())
    np.testing.assert_array_equal(triclinic_cu.get_stress(voigt=False), direct["stress"][0].numpy())


def test_stress_matches_ase_numerical_stress(schnet64, triclinic_cu):
    triclinic_cu.calc = EquivariantCalculator(schnet64)
    numerical = calculate_numerical_stress(triclinic_cu, eps=1e-5)
    analytical = triclinic_cu.get_stress()
    assert np.abs(analytical - numerical).max() < 1e-6 * np.abs(analytical).max()


def test_ase_gradient_test(schnet64, ethanol, capsys):
    ethanol.calc = EquivariantCalculator(schnet64)
    forces, numerical = gradient_test(ethanol, indices=[0, 3, 7])
    # ASE prints max|F − F_fd| (12 decimals) for eps = 1e-1 … 1e-8; at the best step, truncation and
    # roundoff of the energy differences leave ~1e-9 eV/Å, so the best row must agree to 1e-7 relative,
    # and even its last (roundoff-dominated, eps = 1e-8) step to 1e-6.
    table = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    best = min(float(error) for _, error in table)
    assert best < 1e-7 * np.abs(forces).max()
    assert np.abs(forces - numerical).max() < 1e-6


def test_stress_without_cell_is_not_implemented(schnet64, ethanol):
    ethanol.calc = EquivariantCalculator(schnet64)
    ethanol.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic cell of non-zero volume"):
        ethanol.get_stress()


def test_slab_with_vacuum_has_stress_but_not_with_zero_c_vector(schnet64, triclinic_cu):
    slab = triclinic_cu.copy()
    slab.pbc = [True, True, False]
    slab.calc = EquivariantCalculator(schnet64)
    assert np.isfinite(slab.get_stress()).all()
    numerical = calculate_numerical_stress(slab, eps=1e-5)
    assert np.abs(slab.get_stress() - numerical).max() < 1e-6 * np.abs(numerical).max()
    flat = slab.copy()
    flat.cell[2] = 0.0
    flat.calc = EquivariantCalculator(schnet64)
    assert flat.get_potential_energy() == pytest.approx(slab.get_potential_energy(), abs=1e-10)
    with pytest.raises(PropertyNotImplementedError):
        flat.get_stress()


def test_skin_list_equals_fresh_build_along_random_walk(schnet64, triclinic_cu):
    atoms = triclinic_cu * (2, 1, 1)
    atoms.numbers[::3] = 8
    reused = EquivariantCalculator(schnet64, skin=0.6)
    fresh = EquivariantCalculator(schnet64, skin=0.0)
    rng = np.random.default_rng(0)
    for step in range(200):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        if step == 120:  # a cell change without moving the atoms: the list must stay complete
            atoms.set_cell(atoms.cell.array * 1.02, scale_atoms=False)
        reused.calculate(atoms, ["energy", "forces", "stress"])
        fresh.calculate(atoms, ["energy", "forces", "stress"])
        assert reused.results["energy"] == pytest.approx(fresh.results["energy"], abs=1e-12)
        np.testing.assert_allclose(reused.results["forces"], fresh.results["forces"], atol=1e-12)
        np.testing.assert_allclose(reused.results["stress"], fresh.results["stress"], atol=1e-14)
    assert fresh.neighbours.num_builds == 200
    assert 2 <= reused.neighbours.num_builds < 40


def test_cell_relaxation_with_frechet_filter(schnet64, triclinic_cu):
    triclinic_cu.calc = EquivariantCalculator(schnet64)
    start = triclinic_cu.get_potential_energy()
    optimizer = BFGS(FrechetCellFilter(triclinic_cu), logfile=None)
    optimizer.run(fmax=0.05, steps=60)
    assert triclinic_cu.get_potential_energy() < start
    assert optimizer.nsteps > 0


def test_model_file_round_trip_and_dtype_choice(tmp_path, schnet64, ethanol):
    path = tmp_path / "model.pt"
    eqcalc.save_model(schnet64.float(), path)
    payload = torch.load(path, weights_only=True)
    assert payload["family"] == "schnet" and payload["dtype"] == "float32"
    assert payload["config"]["species"] == [1, 6, 8, 29] and payload["eqcalc_version"] == eqcalc.__version__
    calc32 = EquivariantCalculator(str(path))
    calc64 = EquivariantCalculator(path, dtype="float64")
    assert calc32.model.dtype == torch.float32 and calc64.model.dtype == torch.float64
    e32 = calc32.get_potential_energy(ethanol)
    e64 = calc64.get_potential_energy(ethanol)
    assert e32 == pytest.approx(e64, rel=1e-5)


# ---- bad input: each raises a message naming the problem -------------------------------------


def test_unknown_element_is_named(schnet64):
    atoms = Atoms("HFe", positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = EquivariantCalculator(schnet64)
    with pytest.raises(ValueError, match=r"contains Fe, which the model does not know \(it knows H, C, O, Cu\)"):
        atoms.get_potential_energy()


def test_nan_positions_are_rejected(schnet64, ethanol):
    ethanol.calc = EquivariantCalculator(schnet64)
    ethanol.get_potential_energy()
    ethanol.positions[4] = [np.nan, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"Atoms \[4\] have NaN or infinite positions"):
        ethanol.get_potential_energy()


def test_overlapping_atoms_are_named(schnet64):
    atoms = Atoms("HCO", positions=[[0, 0, 0], [1.2, 0, 0], [1.25, 0.0, 0.0]])
    atoms.calc = EquivariantCalculator(schnet64)
    with pytest.raises(ValueError, match=r"Atoms [12] and [12] are 0.0500 Å apart"):
        atoms.get_potential_energy()


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        EquivariantCalculator(tmp_path / "nope.pt")


def test_corrupt_model_file(tmp_path, schnet64):
    path = tmp_path / "model.pt"
    eqcalc.save_model(schnet64, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        eqcalc.load_model(path)


def test_pickled_module_is_refused(tmp_path, schnet64):
    path = tmp_path / "pickled.pt"
    torch.save(schnet64, path)  # a whole module: loading it would run code
    with pytest.raises(ModelFileError, match="never runs code from a model file"):
        eqcalc.load_model(path)


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not an eqcalc model"):
        eqcalc.load_model(path)


def test_unsupported_dtype(schnet64):
    with pytest.raises(ValueError, match="Unsupported dtype 'float16'"):
        EquivariantCalculator(schnet64, dtype="float16")


def test_unknown_family_and_bad_species():
    with pytest.raises(ValueError, match="Unknown model family 'gemnet'"):
        eqcalc.build_model("gemnet", species=[1])
    with pytest.raises(ValueError, match="distinct atomic numbers"):
        eqcalc.build_model("schnet", species=[1, 1])


def test_forces_and_stress_inside_no_grad(schnet64, triclinic_cu):
    triclinic_cu.calc = EquivariantCalculator(schnet64)
    with torch.no_grad():
        forces, stress = triclinic_cu.get_forces(), triclinic_cu.get_stress()
    direct = compute_properties(schnet64, atoms_to_graph(triclinic_cu, schnet64.cutoff), stress=True)
    np.testing.assert_array_equal(forces, direct["forces"].detach().numpy())
    assert np.abs(stress).max() > 0


def test_unknown_element_is_named_by_the_model_itself(schnet64):
    graph = atoms_to_graph(Atoms("HFe", positions=[[0, 0, 0], [1.5, 0, 0]]), schnet64.cutoff)
    with pytest.raises(ValueError, match="contains Fe, which the model does not know"):
        compute_properties(schnet64, graph)


@pytest.mark.parametrize("reuse_memory, num_atoms, switched",
                         [(True, 1536, 1), (True, 192, 0), (False, 1536, 0), (None, 1536, 0)])
def test_large_cpu_structures_keep_freed_memory(monkeypatch, schnet64, reuse_memory, num_atoms, switched):
    """With reuse_memory (opt-in: None = the default), from 1,000 atoms on the calculator switches glibc to
    reusing freed memory, once per calculator (patched here: the real switch is process-wide;
    tests/test_memory.py checks what it does)."""
    calls = []
    monkeypatch.setattr(eqcalc.calculator, "keep_freed_memory", lambda: calls.append(1) or True)
    atoms = water_box(2 if num_atoms == 1536 else 1)
    assert len(atoms) == num_atoms
    options = {} if reuse_memory is None else {"reuse_memory": reuse_memory}
    atoms.calc = EquivariantCalculator(schnet64, **options)
    atoms.get_potential_energy()
    atoms.positions[0] += 0.01
    atoms.get_potential_energy()
    assert len(calls) == switched


def test_reuse_memory_must_be_a_bool(schnet64):
    with pytest.raises(ValueError, match="reuse_memory must be True or False"):
        EquivariantCalculator(schnet64, reuse_memory="yes")
