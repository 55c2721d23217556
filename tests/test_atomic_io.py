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


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    """kill -9 inside an atomic write leaves its temporary; the next write of that file removes it,
    and leaves alone a temporary of a writer that is still running (this process)."""
    import subprocess
    import sys

    target = tmp_path / "checkpoint.pt"
    killed = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfrom eqcalc.atomic_io import atomic_path\n"
         "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_text('half')\n    os._exit(9)", str(target)],
    )
    assert killed.returncode == 9
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.pid") and leftovers[0].endswith(".tmp")
    running = tmp_path / f".checkpoint.pt.pid{os.getpid()}.x.tmp"
    running.write_text("in progress")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.pt", running.name])
    assert target.read_text() == "whole"
