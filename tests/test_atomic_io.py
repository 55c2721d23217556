"""Atomic writes: normal permissions, no partial file on failure."""

import os

import pytest

from eqcalc.atomic_io import atomic_path, write_csv


def test_written_file_gets_umask_permissions_and_replaces_atomically(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "out.csv"
        target.write_text("old\n")
        write_csv(target, ["a", "b"], [{"a": 1, "b": 2}])
        assert target.read_text().splitlines() == ["a,b", "1,2"]
        assert target.stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    finally:
        os.umask(old)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
