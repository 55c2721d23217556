"""Reading training data: empty frames are refused by number; dropped labels are counted in a warning."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from eqcalc.data.readers import structures_from_frames


def water_frames(count=6):
    frames = []
    for i in range(count):
        atoms = molecule("H2O")
        atoms.info["energy"] = -10.0 - i
        atoms.arrays["forces"] = np.full((3, 3), 0.1 * i)
        frames.append(atoms)
    return frames


def test_empty_frame_is_refused_by_number():
    with pytest.raises(ValueError, match="frame 2 has no atoms; remove it"):
        structures_from_frames(water_frames(2) + [Atoms()])


def test_nan_labels_and_other_keys_are_counted_in_warnings():
    frames = water_frames()
    frames[1].info["energy"] = float("nan")
    frames[3].info["Energy"] = frames[3].info.pop("energy")  # a key in another case
    frames[5].info["Energy"] = frames[5].info.pop("energy")
    frames[4].arrays["forces"][0, 0] = np.nan
    with pytest.warns(UserWarning) as record:
        structures = structures_from_frames(frames)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3, messages
    assert "2 frames (3, 5) have no energy under any of the usual keys" in messages[0]
    assert "(3 of 6 frames keep one)" in messages[0]
    assert "frame 1 has non-finite energy values" in messages[1]
    assert "frame 4 has non-finite forces values" in messages[2]
    assert [s.energy is None for s in structures] == [False, True, False, True, False, True]


def test_molecules_beside_crystals_lose_no_stress(recwarn):
    crystal = bulk("Si", "diamond", a=5.43)
    crystal.info.update(energy=-10.0, stress=np.zeros(6))
    crystal.arrays["forces"] = np.zeros((2, 3))
    structures_from_frames([crystal] + water_frames(2))
    assert not [w for w in recwarn if "stress" in str(w.message)]
