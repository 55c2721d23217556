"""Damaged trajectory files are diagnosed at once: never a hang, never a raw HDF5 traceback."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from eqcalc.md import superblock
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


@pytest.mark.parametrize("fraction, commands", [(0.1, ["info"]), (0.5, ["info", "repair", "export"]), (0.999, ["info"])])
def test_truncated_copy_is_diagnosed_by_every_command(tmp_path, fraction, commands):
    """A copy cut short made HDF5's single-writer/multiple-reader open retry forever."""
    write_trajectory(tmp_path / "t.h5", 40)
    data = (tmp_path / "t.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * fraction)])
    extra = {"export": [str(tmp_path / "out.extxyz")]}
    for args in (["traj", command, str(cut), *extra.get(command, [])] for command in commands):
        result = eqcalc_cli(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "is truncated" in lines[0] and "complete copy" in lines[0], result.stderr
    assert cut.read_bytes() == data[: int(len(data) * fraction)]  # repair did not touch it
    with pytest.raises(ValueError, match="is truncated: it holds"):  # in-process last: it hung before
        read_trajectory(cut)


def write_killed_trajectory(path, frames: int) -> None:
    """The file of a writer killed with SIGKILL after ``frames`` frames (write flags still set)."""
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[2]); from test_damaged_files import write_trajectory\n"
        "import eqcalc.md.trajectory as t\n"
        "t.TrajectoryWriter.close = lambda self: os.kill(os.getpid(), 9)\n"
        "write_trajectory(sys.argv[1], int(sys.argv[3]))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(Path(__file__).parent), str(frames)], timeout=60)


def test_superblock_checksum_is_hdf5s_own(tmp_path):
    """lookup3 of the superblock equals the checksum HDF5 stored, for files with and without the
    write flags set."""
    write_trajectory(tmp_path / "closed.h5", 3)
    write_killed_trajectory(tmp_path / "killed.h5", 3)
    for name, flags in (("closed.h5", 0), ("killed.h5", None)):
        head, _ = superblock._superblock(tmp_path / name)
        stored = int.from_bytes((tmp_path / name).read_bytes()[len(head):len(head) + 4], "little")
        assert superblock.lookup3(head) == stored
        assert flags is None or head[superblock.FLAGS_OFFSET] == flags
    assert superblock.lookup3(b"") == 0xDEADBEEF  # the published test values of hashlittle
    assert superblock.lookup3(b"Four score and seven years ago") == 0x17770551


def test_repair_works_in_place_and_makes_a_plain_hdf5_file(tmp_path):
    path = tmp_path / "t.h5"
    write_killed_trajectory(path, 12)
    with pytest.raises(OSError, match="h5clear"):
        h5py.File(path, "r")
    inode, size = path.stat().st_ino, path.stat().st_size
    result = eqcalc_cli("traj", "repair", str(path))
    assert result.returncode == 0 and "Kept 12 complete frames" in result.stdout, result.stderr
    assert path.stat().st_ino == inode and path.stat().st_size <= size  # nothing copied
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(handle["step"][()], np.arange(12))


def test_continuing_a_killed_file_appends_in_place_and_drops_a_partial_frame(tmp_path):
    path = tmp_path / "t.h5"
    write_killed_trajectory(path, 5)
    with h5py.File(path, "r", swmr=True) as handle:  # a partial sixth frame: positions but no step
        assert handle["step"].shape[0] == 5
    superblock.clear_write_flags(path)
    with h5py.File(path, "r+", libver="latest") as handle:
        handle["positions"].resize(6, axis=0)
    writer = TrajectoryWriter.continue_file(path, {"model": "m.pt", "resumed": True})
    inode = path.stat().st_ino
    writer.append(Frame(5, 5.0, *np.ones((3, NUM_ATOMS, 3)), 0.5, np.eye(3), {"rng": np.zeros(4)}))
    writer.close()
    trajectory = read_trajectory(path)
    assert path.stat().st_ino == inode and trajectory.metadata["resumed"]
    np.testing.assert_array_equal(trajectory.step, np.arange(6))
    np.testing.assert_array_equal(trajectory.positions[5], np.ones((NUM_ATOMS, 3)))
