"""Readers: labels from ASE results or named keys, missing labels, clear errors, ASE databases."""

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms

from eqcalc.data.readers import LabelKeys, read_structures


def test_default_labels_are_what_ase_returns(ethanol_file, silicon_file):
    for path in (ethanol_file, silicon_file):
        frames = ase.io.read(path, ":")
        structures = read_structures(path)
        assert len(structures) == len(frames)
        for atoms, s in zip(frames, structures):
            assert s.energy == atoms.get_potential_energy()
            np.testing.assert_array_equal(s.forces, atoms.get_forces())
            np.testing.assert_array_equal(s.positions, atoms.positions)
            np.testing.assert_array_equal(s.cell, atoms.cell.array)
            if atoms.pbc.any():
                np.testing.assert_allclose(s.stress, atoms.get_stress(voigt=False), rtol=0, atol=1e-15)
                assert s.config_type == atoms.info["config_type"]
            else:
                assert s.stress is None


def _ref_key_frames(ethanol_file):
    """Ethanol frames with labels under REF_* names; frame 1 lacks its energy, frame 2 its forces."""
    frames = []
    for i, atoms in enumerate(ase.io.read(ethanol_file, ":5")):
        plain = Atoms(atoms.numbers, atoms.positions)
        if i != 1:
            plain.info["REF_energy"] = atoms.get_potential_energy()
        if i != 2:
            plain.arrays["REF_forces"] = atoms.get_forces()
        frames.append((plain, atoms))
    return frames


def test_fallback_and_named_keys_with_missing_labels(tmp_path, ethanol_file):
    frames = _ref_key_frames(ethanol_file)
    path = tmp_path / "ref.extxyz"
    ase.io.write(path, [plain for plain, _ in frames])
    for keys in (LabelKeys(), LabelKeys(energy="REF_energy", forces="REF_forces")):
        structures = read_structures(path, keys)
        for i, (s, (_, original)) in enumerate(zip(structures, frames)):
            assert (s.energy is None) == (i == 1)
            assert (s.forces is None) == (i == 2)
            if s.energy is not None:
                assert s.energy == pytest.approx(original.get_potential_energy(), abs=1e-8)
            if s.forces is not None:
                np.testing.assert_allclose(s.forces, original.get_forces(), rtol=0, atol=1e-8)


def test_unknown_key_error_names_the_key_and_lists_what_exists(ethanol_file):
    with pytest.raises(ValueError, match=r"'REF_energy'.*Available:.*md17_index"):
        read_structures(ethanol_file, LabelKeys(energy="REF_energy"))


def test_file_without_labels_is_an_error(tmp_path):
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
    with pytest.raises(ValueError, match="no energy, forces or stress"):
        read_structures(path)


def test_wrongly_shaped_label_is_an_error(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    atoms.info["REF_stress"] = [1.0, 2.0, 3.0]
    atoms.info["REF_energy"] = -1.0
    path = tmp_path / "bad.extxyz"
    ase.io.write(path, atoms)
    with pytest.raises(ValueError, match="stress has 3 values"):
        read_structures(path)


def test_missing_and_corrupt_files(tmp_path, ethanol_file):
    with pytest.raises(FileNotFoundError):
        read_structures(tmp_path / "absent.extxyz")
    truncated = tmp_path / "truncated.extxyz"
    truncated.write_text("".join(ethanol_file.read_text().splitlines(keepends=True)[:5]))
    with pytest.raises(ValueError, match="Could not read"):
        read_structures(truncated)
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_bytes(b"\x00\x01 not a structure \xff\n")
    with pytest.raises(ValueError, match="Could not read"):
        read_structures(garbage)


def test_ase_database_gives_the_same_structures(tmp_path, silicon_file):
    expected = read_structures(silicon_file)
    with ase.db.connect(tmp_path / "si.db") as db:
        for atoms in ase.io.read(silicon_file, ":"):
            db.write(atoms, config_type=atoms.info["config_type"])
    got = read_structures(tmp_path / "si.db")
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.energy == b.energy and a.config_type == b.config_type
        np.testing.assert_array_equal(a.forces, b.forces)
        np.testing.assert_allclose(a.stress, b.stress, rtol=0, atol=1e-15)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)


def test_ase_database_with_named_keys(tmp_path, ethanol_file):
    frames = _ref_key_frames(ethanol_file)
    with ase.db.connect(tmp_path / "ref.db") as db:
        for plain, _ in frames:
            kv = {"REF_energy": plain.info["REF_energy"]} if "REF_energy" in plain.info else {}
            data = {"REF_forces": plain.arrays["REF_forces"]} if "REF_forces" in plain.arrays else {}
            db.write(Atoms(plain.numbers, plain.positions), key_value_pairs=kv, data=data)
    structures = read_structures(tmp_path / "ref.db", LabelKeys(energy="REF_energy", forces="REF_forces"))
    assert [s.energy is None for s in structures] == [False, True, False, False, False]
    assert [s.forces is None for s in structures] == [False, False, True, False, False]


def test_overlapping_atoms_name_the_structure(ethanol_file):
    from eqcalc.data.dataset import GraphDataset

    structures = read_structures(ethanol_file)[:3]
    structures[1].positions[4] = structures[1].positions[2] + 0.01
    with pytest.raises(ValueError, match=r"train.xyz, structure 1: Atoms 2 and 4 are 0.0173 Å apart"):
        GraphDataset(structures, 3.0, "train.xyz")
