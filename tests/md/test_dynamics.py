"""Physics of eqcalc.md.run: energy conservation, thermostatting, exact resume."""

import numpy as np
import pytest
from ase.build import bulk
from ase.md.velocitydistribution import thermalize_momenta

from eqcalc.md import read_trajectory, run
from eqcalc.md.log import read_log


def nve_energy_error(model, atoms, tmp_path, timestep, duration):
    """Time (fs), total energy minus its initial value (eV) and potential energy (eV), per step, of an
    NVE run started at 600 K."""
    result = run(
        atoms, model, ensemble="nve", timestep=timestep, steps=int(round(duration / timestep)), temperature=600.0,
        seed=3, log_interval=1, traj_interval=1000, output=tmp_path / f"nve_{timestep}", progress=False,
    )
    assert result.completed, result.stop_reason
    log = read_log(result.log)
    return log["time_fs"], log["etot_eV"] - log["etot_eV"][0], log["epot_eV"]


def test_nve_conserves_energy(morse_model, tmp_path):
    """Velocity Verlet is symplectic and second order: it exactly conserves a shadow Hamiltonian
    H + O(dt²), so the total energy oscillates with an amplitude ∝ dt² and does not drift.
    (The bound Morse crystal, 8 atoms: the untrained network has no repulsive core, so its atoms
    collide in some runs of this length.)"""
    crystal = bulk("Cu", "fcc", a=3.3, cubic=True).repeat((2, 1, 1))
    time, coarse, _ = nve_energy_error(morse_model, crystal, tmp_path, timestep=4.0, duration=1200.0)
    _, fine, epot = nve_energy_error(morse_model, crystal, tmp_path, timestep=2.0, duration=200.0)
    # Second order: over the same 200 fs, halving dt divides the largest error by 4 (a first-order
    # integrator would give 2; forces that are not −∇E would give an error that does not shrink).
    ratio = np.abs(coarse[time <= 200.0]).max() / np.abs(fine).max()
    assert 3.5 < ratio < 4.5, ratio
    # Small: Verlet's relative energy error is of order (ω dt)² for the fastest vibration; in this crystal
    # ω ≈ (4 · 2Dα² / m)^½ ≈ 0.03 fs⁻¹, so (ω dt)² ≈ 4e-3 of the energy exchanged between potential
    # and kinetic at dt = 2 fs; allow 1e-2 of the potential energy's swing.
    assert np.abs(fine).max() < 1e-2 * np.ptp(epot)
    # No drift: over 1.2 ps (300 steps) the error in the second half is no larger than in the first
    # (a steady drift would make it twice as large; 1.5 leaves room for the fluctuating amplitude).
    half = time > 600.0
    assert np.abs(coarse[half]).max() < 1.5 * np.abs(coarse[~half]).max()


@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_thermostat_reaches_target_temperature(morse_model, thermostat, tmp_path):
    """Started at 30 K, a canonical thermostat brings ⟨T⟩ to the target. For 16 atoms (45 degrees of
    freedom) the instantaneous T fluctuates by √(2/45) ≈ 21 %; the error of the mean is estimated
    from 8 block averages after discarding the first 200 fs, and the test allows 4 of them.
    (The bound Morse crystal: the untrained network has no repulsive core, so atoms collide in long runs.)"""
    atoms = bulk("Cu", "fcc", a=3.3, cubic=True).repeat((2, 2, 1))
    thermalize_momenta(atoms, temperature_K=30.0, rng=np.random.default_rng(0))
    target = 300.0
    result = run(
        atoms, morse_model, ensemble="nvt", thermostat=thermostat, friction=0.05, tau_t=20.0, temperature=target,
        velocities="structure", timestep=2.0, steps=500, seed=0, log_interval=1, traj_interval=100,
        output=tmp_path / "nvt", progress=False,
    )
    assert result.completed, result.stop_reason
    log = read_log(result.log)
    assert log["temperature_K"][0] < 0.2 * target
    temperatures = log["temperature_K"][log["time_fs"] >= 200.0]
    blocks = temperatures[: len(temperatures) // 8 * 8].reshape(8, -1).mean(axis=1)
    error = blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert error < 0.1 * target  # the test can resolve a 40 % mistake
    assert abs(temperatures.mean() - target) < 4 * error, (temperatures.mean(), error)


@pytest.mark.parametrize(
    "ensemble,thermostat", [("nve", "langevin"), ("nvt", "langevin"), ("nvt", "nose-hoover"), ("npt", "langevin")]
)
def test_resume_equals_uninterrupted_run(cu_model, cu_crystal, ensemble, thermostat, tmp_path):
    """Stopping after 30 steps and resuming from the saved frame (positions, velocities, thermostat
    and random-generator state) gives the uninterrupted trajectory to round-off."""
    settings = dict(ensemble=ensemble, thermostat=thermostat, timestep=2.0, temperature=600.0, seed=5,
                    log_interval=5, traj_interval=10, progress=False)
    run(cu_crystal, cu_model, steps=60, output=tmp_path / "whole", **settings)
    run(cu_crystal, cu_model, steps=30, output=tmp_path / "split", **settings)
    resumed = run(None, cu_model, steps=60, output=tmp_path / "split", resume=True, progress=False)
    assert resumed.completed and resumed.step == 60
    whole, split = read_trajectory(tmp_path / "whole/trajectory.h5"), read_trajectory(tmp_path / "split/trajectory.h5")
    np.testing.assert_array_equal(split.step, whole.step)
    np.testing.assert_allclose(split.positions, whole.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(split.velocities, whole.velocities, rtol=0, atol=1e-11)
    np.testing.assert_allclose(split.potential_energy, whole.potential_energy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(split.cell, whole.cell, rtol=0, atol=1e-9)
    whole_log, split_log = read_log(tmp_path / "whole/log.csv"), read_log(tmp_path / "split/log.csv")
    np.testing.assert_array_equal(split_log["step"], whole_log["step"])
    np.testing.assert_allclose(split_log["etot_eV"], whole_log["etot_eV"], rtol=0, atol=1e-9)


def test_npt_changes_the_volume_towards_the_target_pressure(cu_model, cu_crystal, tmp_path):
    """Under 5 GPa the barostat compresses the cell, and the logged pressure is the calculator's."""
    result = run(cu_crystal, cu_model, ensemble="npt", pressure=5.0, tau_p=100.0, tau_t=50.0, temperature=300.0,
                 timestep=2.0, steps=60, seed=1, log_interval=10, traj_interval=10, output=tmp_path / "npt",
                 progress=False)
    assert result.completed, result.stop_reason
    trajectory = read_trajectory(result.trajectory)
    volumes = np.abs(np.linalg.det(trajectory.cell))
    assert volumes[-1] < volumes[0]
    assert "pressure_GPa" in read_log(result.log)
