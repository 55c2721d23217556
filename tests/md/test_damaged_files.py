"""Damaged trajectory files are diagnosed at once: never a hang, never a raw HDF5 traceback."""

import subprocess
import sys

import numpy as np
import pytest

from eqcalc.md.trajectory import Frame, TrajectoryWriter, read_trajectory

NUM_ATOMS = 8


def write_trajectory(path, frames: int) -> None:
    rng = np.random.default_rng(0)
    writer = TrajectoryWriter(
        path, np.full(NUM_ATOMS, 29), np.ones(NUM_ATOMS), np.ones(3, bool), {"model": "m.pt"}, {"rng": np.zeros(4)}
    )
    for step in range(frames):
        vectors = rng.random((3, NUM_ATOMS, 3))
        writer.append(Frame(step, float(step), *vectors, 0.1 * step, np.eye(3), {"rng": np.zeros(4)}))
    writer.close()


def eqcalc_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the command line in a subprocess, so that a hang fails the test instead of stalling it."""
    return subprocess.run(
        [sys.executable, "-m", "eqcalc.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_complete_file_reads(tmp_path):
    write_trajectory(tmp_path / "t.h5", 40)
    trajectory = read_trajectory(tmp_path / "t.h5")
    np.testing.assert_array_equal(trajectory.step, np.arange(40))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.999])
def test_truncated_copy_is_diagnosed_by_every_command(tmp_path, fraction):
    """A copy cut short made HDF5's single-writer/multiple-reader open retry forever."""
    write_trajectory(tmp_path / "t.h5", 40)
    data = (tmp_path / "t.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * fraction)])
    for args in (["traj", "info", str(cut)], ["traj", "repair", str(cut)],
                 ["traj", "export", str(cut), str(tmp_path / "out.extxyz")]):
        result = eqcalc_cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is truncated" in lines[0] and "complete copy" in lines[0], result.stderr
    assert cut.read_bytes() == data[: int(len(data) * fraction)]  # repair did not touch it
    with pytest.raises(ValueError, match="is truncated: it holds"):  # in-process last: it hung before
        read_trajectory(cut)
