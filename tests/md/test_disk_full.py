"""A full disk during eqcalc md: a clean stop naming the disk, every frame kept, resume once space is freed."""

import os
import shutil
import subprocess

import numpy as np
import pytest

from eqcalc.md import read_trajectory, run


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root and permission to mount; skipped elsewhere)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def test_full_disk_stops_cleanly_and_resumes_after_space_is_freed(morse_model, cu_crystal, small_disk, tmp_path):
    atoms = cu_crystal.repeat((2, 2, 2))
    settings = dict(ensemble="nve", timestep=1.0, temperature=300.0, seed=4, log_interval=1, traj_interval=1,
                    progress=False)
    steps = 2000  # ~7 MiB of frames: more than the disk holds
    stopped = run(atoms, morse_model, steps=steps, output=small_disk / "run", **settings)
    assert not stopped.completed
    assert "is full" in stopped.stop_reason and "--resume" in stopped.stop_reason
    kept = read_trajectory(small_disk / "run" / "trajectory.h5")
    assert len(kept) > 10 and kept.step[-1] == stopped.step
    np.testing.assert_array_equal(kept.step, np.arange(len(kept)))

    # 2 MiB freed, less than the trajectory holds: a resumed run appends in place, copying nothing
    subprocess.run(["mount", "-o", "remount,size=5M", str(small_disk)], check=True)
    inode = (small_disk / "run" / "trajectory.h5").stat().st_ino
    partly = run(None, morse_model, steps=stopped.step + 50, output=small_disk / "run", resume=True, progress=False)
    assert partly.completed and (small_disk / "run" / "trajectory.h5").stat().st_ino == inode

    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    resumed = run(None, morse_model, steps=steps, output=small_disk / "run", resume=True, progress=False)
    assert resumed.completed and resumed.step == steps
    reference = run(atoms, morse_model, steps=steps, output=tmp_path / "reference", **settings)
    np.testing.assert_allclose(resumed.atoms.positions, reference.atoms.positions, rtol=0, atol=1e-9)


def test_model_file_on_a_full_disk_is_an_oserror_naming_the_disk(small_disk):
    import errno

    import eqcalc

    model = eqcalc.build_model("painn", species=["H", "C", "O"])  # 2.3 MB of weights, on 1 MiB left
    (small_disk / "filler").write_bytes(b"\0" * (2 << 20))
    with pytest.raises(OSError, match="failed because the disk is full") as raised:
        eqcalc.save_model(model, small_disk / "model.pt")
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no partial file, no temporary
