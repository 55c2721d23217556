"""eqcalc HDF5 structures: exact round trip, append, interrupted append, foreign files, convert."""

import h5py
import numpy as np
import pytest

from eqcalc.cli import main
from eqcalc.data.hdf5 import read_hdf5, write_hdf5
from eqcalc.data.readers import read_structures


def assert_same_structures(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        for name in ("numbers", "positions", "cell", "pbc"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert a.energy == b.energy and a.config_type == b.config_type
        for name in ("forces", "stress"):
            if getattr(b, name) is None:
                assert getattr(a, name) is None
            else:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.fixture
def mixed(ethanol_file, silicon_file):
    """Molecules and periodic cells; some structures lack energy, forces or stress."""
    structures = read_structures(ethanol_file)[:7] + read_structures(silicon_file)[:5]
    structures[1].energy = None
    structures[2].forces = None
    structures[8].stress = None
    return structures


def test_round_trip_is_exact_and_keeps_missing_labels(tmp_path, mixed):
    write_hdf5(tmp_path / "d.h5", mixed)
    assert_same_structures(read_hdf5(tmp_path / "d.h5"), mixed)


def test_file_describes_itself(tmp_path, mixed):
    write_hdf5(tmp_path / "d.h5", mixed)
    with h5py.File(tmp_path / "d.h5") as f:
        assert f.attrs["format"] == "eqcalc-structures"
        assert f["positions"].attrs["units"] == "Å"
        assert f["stress"].attrs["units"] == "eV/Å^3"
        assert f["forces"].chunks is not None and f["forces"].maxshape[0] is None


def test_append_equals_writing_everything_at_once(tmp_path, mixed):
    write_hdf5(tmp_path / "d.h5", mixed[:4])
    write_hdf5(tmp_path / "d.h5", mixed[4:9], append=True)
    write_hdf5(tmp_path / "d.h5", mixed[9:], append=True)
    assert_same_structures(read_hdf5(tmp_path / "d.h5"), mixed)


def test_interrupted_append_leaves_committed_structures(tmp_path, mixed):
    write_hdf5(tmp_path / "d.h5", mixed[:4])
    with h5py.File(tmp_path / "d.h5", "r+") as f:  # rows written, lengths never committed
        f["positions"].resize(f["positions"].shape[0] + 50, axis=0)
        f["num_atoms"].resize(9, axis=0)
    assert_same_structures(read_hdf5(tmp_path / "d.h5"), mixed[:4])
    write_hdf5(tmp_path / "d.h5", mixed[4:], append=True)
    assert_same_structures(read_hdf5(tmp_path / "d.h5"), mixed)


def test_foreign_and_corrupt_files_give_clear_errors(tmp_path, mixed):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not eqcalc structures"):
        read_structures(tmp_path / "foreign.h5")
    with pytest.raises(ValueError, match="not eqcalc structures"):
        write_hdf5(tmp_path / "foreign.h5", mixed, append=True)
    (tmp_path / "text.h5").write_text("positions and energies\n")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_structures(tmp_path / "text.h5")
    write_hdf5(tmp_path / "d.h5", mixed)
    with h5py.File(tmp_path / "d.h5", "r+") as f:
        del f["forces"]
    with pytest.raises(ValueError, match="damaged"):
        read_hdf5(tmp_path / "d.h5")


def test_convert_command(tmp_path, ethanol_file, silicon_file, capsys):
    out = tmp_path / "all.h5"
    assert main(["convert", str(ethanol_file), str(silicon_file), str(out)]) == 0
    assert "Wrote 73 structures" in capsys.readouterr().out
    expected = read_structures(ethanol_file) + read_structures(silicon_file)
    assert_same_structures(read_structures(out), expected)
    assert main(["convert", str(ethanol_file), str(tmp_path / "x.xyz")]) == 2
    assert "must end in .h5" in capsys.readouterr().err
    # an existing dataset is never replaced silently
    assert main(["convert", str(ethanol_file), str(out)]) == 2
    assert "already exists. Add --append" in capsys.readouterr().err
    assert len(read_structures(out)) == 73
    assert main(["convert", str(ethanol_file), str(out), "--overwrite"]) == 0
    assert len(read_structures(out)) == 60
