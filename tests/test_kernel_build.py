"""Building the CPU kernels survives a build that was killed (it left torch's lock file behind)."""

import os
import subprocess
import sys

import pytest

from eqcalc.nn import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="eqcalc's CPU kernels cannot be built here")

LOAD = "import warnings; warnings.simplefilter('always'); from eqcalc.nn import kernels; print(kernels.available())"


def test_stale_lock_of_a_killed_build_is_removed_not_waited_on():
    """torch's extension builder waits forever while its ``lock`` file exists; a kill -9 during the
    first build leaves it there. A later process must detect it and load (or build) anyway."""
    directory = kernels.build_directory(f"eqcalc_kernels_{kernels._cpu_fingerprint()}")
    stale = directory / "lock"
    stale.touch()
    try:
        result = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True, timeout=300)
        removed = not stale.exists()
    finally:
        stale.unlink(missing_ok=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert "stale build lock" in result.stderr
    assert removed


def test_building_the_kernels_leaves_path_as_it_was(monkeypatch):
    """ninja's folder is put on PATH for the build only (it was a process-wide side effect)."""
    from eqcalc.nn import kernels

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with kernels._ninja_on_path():
        inside = os.environ["PATH"]
    assert os.environ["PATH"] == "/usr/bin:/bin"
    import ninja

    assert inside.split(os.pathsep)[0] == ninja.BIN_DIR
