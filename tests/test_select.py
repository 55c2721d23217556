"""eqcalc select: frames to label by committee uncertainty with diversity (eqcalc.selection)."""

import doctest
import inspect

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

import eqcalc
from eqcalc import selection
from eqcalc.cli import main
from eqcalc.md.trajectory import Frame, TrajectoryWriter
from eqcalc.testing.physics import random_orthogonal, transformed

SPECIES = ["H", "C", "O"]


@pytest.fixture(scope="module")
def committee_files(tmp_path_factory):
    """Two tiny SchNet models of H, C, O with different random weights, saved as files."""
    folder = tmp_path_factory.mktemp("committee")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = eqcalc.build_model("schnet", species=SPECIES, cutoff=3.0, num_features=8, num_interactions=1)
        eqcalc.save_model(model.double(), folder / f"m{seed}.pt")
        paths.append(str(folder / f"m{seed}.pt"))
    return paths


def mixed_cell():
    """A rattled, triclinic periodic cell of H, C and O."""
    rng = np.random.default_rng(4)
    cell = np.array([[4.0, 0.0, 0.0], [0.7, 4.3, 0.0], [-0.4, 0.5, 4.6]])
    positions = rng.random((9, 3)) @ cell
    return Atoms("H4C3O2", positions=positions, cell=cell, pbc=True)


def ethanols(count, rattle, seed=0):
    frames = []
    for k in range(count):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(rattle, seed=seed + k)
        frames.append(atoms)
    return frames


def distinct_molecules():
    return [molecule(name) for name in ("H2O", "CH4", "CO2", "C2H4", "CH3OH", "HCOOH")]


def cli_error(capsys, args):
    """(exit code, the stderr lines) of ``eqcalc select ARGS``."""
    code = main(["select", *args])
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_error(code, lines, *words):
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("eqcalc select: error:"), lines
    for word in words:
        assert word in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# descriptor


@pytest.mark.parametrize("structure", ["molecule", "periodic"])
def test_descriptor_is_invariant_under_rotation_reflection_translation_and_permutation(structure):
    atoms = molecule("CH3CH2OH") if structure == "molecule" else mixed_cell()
    rng = np.random.default_rng(7)
    reference = selection.frame_descriptor(atoms, cutoff=4.0)
    for reflection in (False, True):
        moved = transformed(atoms, random_orthogonal(rng, reflection), rng.normal(size=3) * 3.0,
                            rng.permutation(len(atoms)))
        np.testing.assert_allclose(selection.frame_descriptor(moved, cutoff=4.0), reference, atol=1e-10)
    if structure == "periodic":  # wrapped positions and a supercell describe the same structure
        wrapped = atoms.copy()
        wrapped.positions += 5.0
        wrapped.wrap()
        np.testing.assert_allclose(selection.frame_descriptor(wrapped, cutoff=4.0), reference, atol=1e-10)
        np.testing.assert_allclose(selection.frame_descriptor(atoms * (2, 1, 1), cutoff=4.0), reference, atol=1e-10)


def test_descriptor_changes_with_the_structure():
    atoms = molecule("CH3CH2OH")
    reference = selection.frame_descriptor(atoms)
    stretched = atoms.copy()
    stretched.positions[8] += [0.3, 0.0, 0.0]  # the hydroxyl H
    swapped = atoms.copy()
    swapped.numbers[2] = 6  # O → C
    species = selection.species_of([atoms, swapped])
    assert np.linalg.norm(selection.frame_descriptor(stretched) - reference) > 0.05 * np.linalg.norm(reference)
    changed = selection.frame_descriptor(swapped, species=species) - selection.frame_descriptor(atoms, species=species)
    assert np.linalg.norm(changed) > 0.1 * np.linalg.norm(reference)


def test_rattled_copies_are_closer_than_distinct_structures():
    frames = ethanols(3, 0.01) + distinct_molecules()
    descriptors = selection.frame_descriptors(frames)
    close = np.linalg.norm(descriptors[1] - descriptors[0])
    far = min(np.linalg.norm(descriptors[k] - descriptors[0]) for k in range(3, len(frames)))
    assert 0 < close < 0.1 * far


def test_descriptor_errors():
    with pytest.raises(ValueError, match="no atoms"):
        selection.frame_descriptor(Atoms())
    with pytest.raises(ValueError, match="outside the species"):
        selection.frame_descriptor(molecule("H2O"), species=[1])


# ---------------------------------------------------------------------------------------------
# rule


def synthetic_set():
    """10 near-copies of ethanol, the most uncertain, then six distinct molecules, less so."""
    frames = ethanols(10, 0.01) + distinct_molecules()
    uncertainties = [1.0 + 0.01 * k for k in range(10)] + [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    return frames, np.array(uncertainties)


def test_diversity_beats_ranking():
    frames, uncertainties = synthetic_set()
    ranked = list(np.argsort(-uncertainties)[:3])
    assert all(k < 10 for k in ranked)  # pure ranking: three near-copies
    picked = selection.select_frames(frames, uncertainties, k=3)
    assert picked[0] == int(np.argmax(uncertainties))
    assert len(picked) == len(set(picked)) == 3
    assert sum(k < 10 for k in picked) == 1


def test_rule_on_descriptors_follows_the_docstring():
    # 1-D descriptors: distances are plain differences
    descriptors = np.array([[0.0], [0.1], [5.0], [10.0]])
    uncertainties = [1.0, 0.9, 0.2, 0.1]
    # first the largest u (0); then u·d: 0.09, 1.0, 1.0 -> tie between 2 and 3, larger u wins (2);
    # then d to {0, 2}: 0.1·0.9 = 0.09 for 1, 5·0.1 = 0.5 for 3
    assert selection.greedy_pick(descriptors, uncertainties, 3) == [0, 2, 3]
    assert selection.greedy_pick(descriptors, uncertainties, 4) == [0, 2, 3, 1]
    # equal uncertainties and identical frames: ties go to the lower index
    assert selection.greedy_pick(np.zeros((3, 2)), [0.5, 0.5, 0.5], 3) == [0, 1, 2]


def test_min_uncertainty_filters():
    frames, uncertainties = synthetic_set()
    picked = selection.select_frames(frames, uncertainties, k=3, min_uncertainty=0.9)
    assert all(k < 10 for k in picked) and len(set(picked)) == 3
    picked = selection.select_frames(frames, uncertainties, k=4, min_uncertainty=0.62)
    assert picked[0] == 9 and all(uncertainties[k] >= 0.62 for k in picked)
    assert sum(k < 10 for k in picked) == 1
    with pytest.raises(ValueError, match="only 14 of the 16"):
        selection.select_frames(frames, uncertainties, k=15, min_uncertainty=0.6)


def test_max_uncertainty_leaves_out_the_wildest_frames():
    frames, uncertainties = synthetic_set()
    # below 1.0 only the six distinct molecules (0.5 … 0.75) are candidates: the most uncertain of them first
    picked = selection.select_frames(frames, uncertainties, k=3, max_uncertainty=0.99)
    assert picked[0] == 15 and all(k >= 10 for k in picked) and len(set(picked)) == 3
    # a window: 0.55 ≤ u ≤ 0.7 holds frames 11 … 14
    picked = selection.select_frames(frames, uncertainties, k=4, min_uncertainty=0.55, max_uncertainty=0.7)
    assert sorted(picked) == [11, 12, 13, 14] and picked[0] == 14
    with pytest.raises(ValueError, match=r"only 4 of the 16 .* ≥ min_uncertainty=0.55 and ≤ max_uncertainty=0.7"):
        selection.select_frames(frames, uncertainties, k=5, min_uncertainty=0.55, max_uncertainty=0.7)
    with pytest.raises(ValueError, match="above max_uncertainty"):
        selection.select_frames(frames, uncertainties, k=1, min_uncertainty=0.8, max_uncertainty=0.7)


@pytest.mark.parametrize("k, uncertainties, message", [
    (0, [0.1, 0.2], "positive integer"),
    (3, [0.1, 0.2], "only 2 candidate"),
    (1, [0.1, float("nan")], "finite"),
    (1, [0.1, -0.2], "finite and ≥ 0"),
    (1, [0.1], "2 frames but 1 uncertainties"),
])
def test_select_frames_errors(k, uncertainties, message):
    with pytest.raises(ValueError, match=message):
        selection.select_frames([molecule("H2O"), molecule("CH4")], uncertainties, k)


def test_docstring_examples():
    failures, tried = doctest.testmod(selection, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


# ---------------------------------------------------------------------------------------------
# uncertainties


def test_stored_uncertainty_equals_the_committee_one(committee_files, tmp_path):
    frames = ethanols(3, 0.1) + [molecule("CH3OH")]
    candidates = [selection.Candidate(atoms, "mem", k) for k, atoms in enumerate(frames)]
    calculator = selection.committee_calculator(committee_files)
    computed = selection.committee_uncertainties(candidates, calculator)
    assert computed.shape == (4,) and (computed > 0).all()
    for atoms in frames:
        atoms.calc = eqcalc.EquivariantCalculator(committee_files)
        atoms.get_forces()
        atoms.arrays["forces_std"] = atoms.calc.results["forces_std"]
        expected = atoms.calc.results["forces_std"].max()
        atoms.calc = None
        assert selection.max_force_std(atoms) == expected
    ase.io.write(tmp_path / "with_std.extxyz", frames, format="extxyz")
    stored = selection.stored_uncertainties(selection.read_candidates([tmp_path / "with_std.extxyz"]))
    np.testing.assert_allclose(stored, computed, rtol=1e-6, atol=1e-7)


def test_uncertainty_from_calculator_results():
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, forces=np.zeros((3, 3)))
    assert selection.max_force_std(atoms) is None
    atoms.calc.results["forces_std"] = np.array([0.1, 0.3, 0.2])
    assert selection.max_force_std(atoms) == 0.3
    atoms.calc.results["forces_std"] = np.array([0.1, 0.3])
    with pytest.raises(ValueError, match="shape"):
        selection.max_force_std(atoms)


# ---------------------------------------------------------------------------------------------
# command line


@pytest.fixture
def md_frames(tmp_path):
    """An extxyz file as exported from an MD run with a committee: model energy and forces, a
    per-atom forces_std; the synthetic set (the ethanol near-copies most uncertain)."""
    frames, uncertainties = synthetic_set()
    for step, (atoms, u) in enumerate(zip(frames, uncertainties)):
        spread = np.full(len(atoms), 0.5 * u)
        spread[0] = u
        atoms.arrays["forces_std"] = spread
        atoms.info.update(step=10 * step, config_type="md")
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * step, forces=np.ones((len(atoms), 3)))
    path = tmp_path / "md.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path, frames, uncertainties


def test_cli_writes_k_frames_with_info_and_no_model_labels(md_frames, tmp_path, capsys):
    path, frames, uncertainties = md_frames
    output = tmp_path / "out" / "picked.extxyz"
    assert main(["select", str(path), "--n", "3", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "Next: label them" in out and "Wrote 3 of 16 candidate frames" in out
    picked = ase.io.read(output, ":")
    assert len(picked) == 3
    assert sum(atoms.info["frame"] < 10 for atoms in picked) == 1
    for atoms in picked:
        original = frames[atoms.info["frame"]]
        assert atoms.info["source"] == str(path)
        assert atoms.info["max_force_std"] == pytest.approx(uncertainties[atoms.info["frame"]])
        assert atoms.info["step"] == original.info["step"] and atoms.info["config_type"] == "md"
        np.testing.assert_allclose(atoms.positions, original.positions, atol=1e-7)
        np.testing.assert_array_equal(atoms.numbers, original.numbers)
        assert atoms.calc is None  # no energy, forces or stress came along
        assert not {"energy", "forces", "forces_std", "free_energy"} & (set(atoms.info) | set(atoms.arrays))
    assert sorted(p.name for p in output.parent.iterdir()) == ["picked.extxyz"]  # no temporaries left


def test_cli_every_and_min_uncertainty(md_frames, tmp_path, capsys):
    path, _, uncertainties = md_frames
    output = tmp_path / "picked.extxyz"
    assert main(["select", str(path), "--n", "2", "--every", "2", "--min-uncertainty", "0.9", "--output", str(output)]) == 0
    picked = ase.io.read(output, ":")
    assert all(atoms.info["frame"] % 2 == 0 and atoms.info["frame"] < 10 for atoms in picked)
    assert picked[0].info["frame"] == 8  # the most uncertain of frames 0, 2, …, 14
    assert "of 5 candidate frames with max forces_std ≥ 0.9 eV/Å (8 read)" in capsys.readouterr().out
    assert main(["select", str(path), "--n", "2", "--max-uncertainty", "0.9", "--output", str(output)]) == 0
    assert all(atoms.info["frame"] >= 10 for atoms in ase.io.read(output, ":"))
    assert "of 6 candidate frames with max forces_std ≤ 0.9 eV/Å (16 read)" in capsys.readouterr().out


def test_cli_committee_on_an_md_trajectory(committee_files, tmp_path, capsys):
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    writer = TrajectoryWriter(tmp_path / "trajectory.h5", atoms.numbers, atoms.get_masses(), atoms.pbc, {}, {})
    for step in range(6):
        positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        writer.append(Frame(step, 0.5 * step, positions, np.zeros_like(positions), np.ones_like(positions), -3.0,
                            np.zeros((3, 3))))
    writer.close()
    output = tmp_path / "picked.extxyz"
    code = main(["select", str(tmp_path / "trajectory.h5"), "--model", *committee_files, "--n", "2", "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    picked = ase.io.read(output, ":")
    assert len(picked) == 2 and all(a.calc is None and "forces" not in a.arrays for a in picked)
    candidates = selection.read_candidates([tmp_path / "trajectory.h5"])
    computed = selection.committee_uncertainties(candidates, selection.committee_calculator(committee_files))
    for frame in picked:
        assert frame.info["max_force_std"] == pytest.approx(computed[frame.info["frame"]], rel=1e-6)
        assert frame.info["step"] == frame.info["frame"]


def test_cli_reads_forces_std_of_a_committee_md_trajectory(tmp_path, capsys):
    if "forces_std" not in inspect.signature(TrajectoryWriter).parameters:
        pytest.skip("this eqcalc md trajectory stores no forces_std")
    atoms = bulk("C", "diamond", a=3.57, cubic=True)
    rng = np.random.default_rng(1)
    writer = TrajectoryWriter(tmp_path / "trajectory.h5", atoms.numbers, atoms.get_masses(), atoms.pbc, {}, {},
                              forces_std=True)
    spreads = rng.random((4, len(atoms)))
    for step, spread in enumerate(spreads):
        positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        writer.append(Frame(10 * step, 5.0 * step, positions, np.zeros_like(positions), np.ones_like(positions), -1.0,
                            atoms.cell.array, {}, forces_std=spread))
    writer.close()
    output = tmp_path / "picked.extxyz"
    assert main(["select", str(tmp_path / "trajectory.h5"), "--n", "2", "--output", str(output)]) == 0
    picked = ase.io.read(output, ":")
    assert picked[0].info["frame"] == int(np.argmax(spreads.max(axis=1)))
    for frame in picked:
        assert frame.info["max_force_std"] == pytest.approx(spreads[frame.info["frame"]].max())
        assert frame.info["step"] == 10 * frame.info["frame"] and frame.pbc.all()
        assert "forces_std" not in frame.arrays and frame.calc is None


def test_cli_errors_are_one_line(md_frames, committee_files, tmp_path, capsys):
    path, _, _ = md_frames
    output = tmp_path / "picked.extxyz"
    base = ["--output", str(output)]
    assert_one_line_error(*cli_error(capsys, [str(path), "--n", "0", *base]), "--n must be ≥ 1")
    assert_one_line_error(*cli_error(capsys, [str(path), "--n", "3", "--every", "0", *base]), "--every")
    assert_one_line_error(*cli_error(capsys, [str(path), "--n", "17", *base]), "only 16 candidate frames")
    assert_one_line_error(*cli_error(capsys, [str(path), "--n", "11", "--min-uncertainty", "0.9", *base]),
                          "only 10 of the 16", "--min-uncertainty")
    assert_one_line_error(*cli_error(capsys, [str(path), "--n", "1", "--min-uncertainty", "0.9", "--max-uncertainty",
                                              "0.5", *base]), "--min-uncertainty=0.9 is above --max-uncertainty=0.5")
    assert_one_line_error(*cli_error(capsys, [str(tmp_path / "missing.extxyz"), "--n", "1", *base]),
                          "missing.extxyz", "does not exist")
    empty = tmp_path / "empty_frame.extxyz"
    ase.io.write(empty, [molecule("H2O"), Atoms()], format="extxyz")
    assert_one_line_error(*cli_error(capsys, [str(empty), "--n", "1", *base]), "frame 1 has no atoms")
    plain = tmp_path / "plain.extxyz"
    ase.io.write(plain, [molecule("H2O")], format="extxyz")
    assert_one_line_error(*cli_error(capsys, [str(plain), "--n", "1", *base]), "forces_std", "--model")
    assert_one_line_error(*cli_error(capsys, [str(plain), "--n", "1", "--model", committee_files[0], *base]),
                          "committee of one model")
    assert not output.exists()
