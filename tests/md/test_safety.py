"""Safety guards, crash-proof trajectories, command line."""

import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

import eqcalc
from eqcalc.cli import main
from eqcalc.md import export_trajectory, read_trajectory, run
from eqcalc.md.defaults import bundled_asset
from eqcalc.models.schnet import SchNet
from eqcalc.nn import scatter_sum


class PlantedBlowUp(SchNet):
    """SchNet that turns bad after ``good_calls`` evaluations: NaN energies, or a stiff spring
    ``k Σ|r_ij|²`` giving forces of thousands of eV/Å."""

    def __init__(self, *args, good_calls: int, failure: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.good_calls, self.failure, self.calls = good_calls, failure, 0

    def forward(self, numbers, edge_index, edge_vectors, batch, num_graphs):
        energies = super().forward(numbers, edge_index, edge_vectors, batch, num_graphs)
        self.calls += 1
        if self.calls <= self.good_calls:
            return energies
        if self.failure == "nan":
            return energies * float("nan")
        spring = 1e3 * (edge_vectors.to(torch.float64) ** 2).sum(-1)
        return energies + scatter_sum(spring, edge_index[0], energies.shape[0])


@pytest.mark.parametrize(
    "case,expected",
    [("nan", "non-finite"), ("huge", "force on atom"), ("hot", "temperature reached"), ("contact", "they collided")],
)
def test_guard_stops_cleanly_and_keeps_last_good_frame(cu_model, cu_crystal, case, expected, tmp_path):
    settings = dict(ensemble="nve", timestep=2.0, temperature=600.0, steps=200, seed=2, log_interval=5,
                    traj_interval=5, output=tmp_path / case, progress=False)
    model = cu_model
    if case in ("nan", "huge"):
        torch.manual_seed(36)
        model = PlantedBlowUp([29], 5.0, num_features=8, num_interactions=1, num_basis=8, energy_scale=100.0,
                              good_calls=18, failure=case).double()
    elif case == "hot":
        settings.update(ensemble="nvt", temperature=3000.0, max_temperature=1000.0, velocities="structure",
                        friction=0.02)
    else:
        settings.update(min_distance=2.3)  # nearest neighbours start at 2.47 Å
    result = run(cu_crystal, model, **settings)
    assert not result.completed
    assert expected in result.stop_reason
    trajectory = read_trajectory(tmp_path / case / "trajectory.h5")
    assert len(trajectory) >= 2
    assert np.all(np.diff(trajectory.step) > 0)
    assert trajectory.step[-1] == result.step < 200  # ends with the last good state
    np.testing.assert_array_equal(trajectory.positions[-1], result.atoms.positions)
    assert np.all(np.isfinite(trajectory.forces)) and np.all(np.isfinite(trajectory.potential_energy))
    assert np.linalg.norm(trajectory.forces, axis=-1).max() <= 50.0
    if case == "nan":
        assert result.step == 17  # evaluation 18 is step 17 (step 0 is evaluated first); step 18 is NaN


KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
from ase.io import read
from eqcalc.md import run
run(read(sys.argv[1]), sys.argv[2], ensemble="nve", timestep=1.0, temperature=300.0, steps=10**6, seed=4,
    log_interval=1, traj_interval=1, output=sys.argv[3], progress=False)
"""


def logged_rows(path) -> int:
    """Rows of a growing CSV log, a partly written last one included (its frame is already saved)."""
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


def test_killed_run_leaves_every_completed_frame_and_resumes(cu_model, cu_crystal, tmp_path):
    """kill -9 in the middle of a run: the HDF5 file opens, holds every frame logged before the kill
    (frames are written before their log row), and resuming from it reproduces an uninterrupted run."""
    model_file, structure_file, output = tmp_path / "cu.pt", tmp_path / "cu.extxyz", tmp_path / "run"
    eqcalc.save_model(cu_model, model_file)
    cu_crystal.write(structure_file)
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(structure_file), str(model_file), str(output)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if logged_rows(output / "log.csv") >= 20:
                break
            time.sleep(0.05)
        logged = logged_rows(output / "log.csv")
        assert process.poll() is None, "the run ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    trajectory = read_trajectory(output / "trajectory.h5")
    assert len(trajectory) >= logged >= 20
    np.testing.assert_array_equal(trajectory.step, np.arange(len(trajectory)))
    assert np.all(np.isfinite(trajectory.positions)) and np.all(np.isfinite(trajectory.velocities))

    with pytest.raises(OSError):
        h5py.File(output / "trajectory.h5", "r")  # still marked as open for writing, until repaired
    assert main(["traj", "repair", str(output / "trajectory.h5")]) == 0
    with h5py.File(output / "trajectory.h5", "r") as handle:
        np.testing.assert_array_equal(handle["step"][()], trajectory.step)

    last = int(trajectory.step[-1])
    resumed = run(None, None, steps=last + 10, output=output, resume=True, progress=False)  # model file recorded
    assert resumed.completed and resumed.step == last + 10
    reference = run(cu_crystal, cu_model, ensemble="nve", timestep=1.0, temperature=300.0, steps=last + 10, seed=4,
                    log_interval=1, traj_interval=1, output=tmp_path / "reference", progress=False)
    np.testing.assert_allclose(resumed.atoms.positions, reference.atoms.positions, rtol=0, atol=1e-9)
    assert len(read_trajectory(output / "trajectory.h5")) == last + 11


def test_cli_md_yaml_flags_export_and_relax(cu_model, cu_crystal, tmp_path, capsys):
    model_file, structure_file = tmp_path / "cu.pt", tmp_path / "cu.extxyz"
    eqcalc.save_model(cu_model, model_file)
    cu_crystal.write(structure_file)
    config = tmp_path / "md.yaml"
    config.write_text(f"model: {model_file}\nstructure: {structure_file}\nensemble: nve\nsteps: 50\ntimestep: 2.0\n")
    output = tmp_path / "run"
    assert main(["md", "--config", str(config), "--steps", "12", "--traj-interval", "4", "--output", str(output),
                 "--no-progress"]) == 0
    assert "ns/day" in capsys.readouterr().out
    for name in ("trajectory.h5", "log.csv", "energy.png", "temperature.png", "final.extxyz", "config.yaml"):
        assert (output / name).is_file(), name
    trajectory = read_trajectory(output / "trajectory.h5")
    np.testing.assert_array_equal(trajectory.step, [0, 4, 8, 12])  # the flag overrode the YAML's steps
    assert trajectory.metadata["md"]["ensemble"] == "nve"
    assert main(["md", "--resume", "--output", str(output), "--steps", "16", "--no-progress"]) == 0
    assert main(["md", "--model", str(model_file), "--structure", str(structure_file), "--output", str(output)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["traj", "export", str(output / "trajectory.h5"), str(tmp_path / "frames.extxyz")]) == 0
    from ase.io import read

    frames = read(tmp_path / "frames.extxyz", ":")
    assert [f.info["step"] for f in frames] == [0, 4, 8, 12, 16]
    np.testing.assert_allclose(frames[-1].get_forces(), read_trajectory(output / "trajectory.h5").forces[-1],
                               atol=1e-7)  # extxyz keeps 8 decimals
    assert export_trajectory(output / "trajectory.h5", tmp_path / "every2.xyz", every=2) == 3

    relax_dir = tmp_path / "relax"
    rc = main(["relax", "--model", str(model_file), "--structure", str(structure_file), "--cell", "--steps", "3",
               "--output", str(relax_dir)])
    assert rc in (0, 1)
    out = capsys.readouterr().out
    assert "final energy" in out and "pressure" in out
    assert (relax_dir / "relaxed.extxyz").is_file() and (relax_dir / "relax_trajectory.extxyz").is_file()


def test_missing_bundled_asset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="--model"):
        bundled_asset("no_such_model.pt")


def test_compile_flag_reaches_the_md_settings():
    import argparse

    from eqcalc.commands.md import add_arguments, collect_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert collect_settings(parser.parse_args(["--compile"])) == ({"compile": True}, {})
    assert collect_settings(parser.parse_args(["--no-compile"])) == ({"compile": False}, {})
    assert collect_settings(parser.parse_args([])) == ({}, {})


def test_bad_settings_are_rejected(cu_model, cu_crystal, tmp_path):
    with pytest.raises(ValueError, match="Unknown MD settings"):
        run(cu_crystal, cu_model, temprature=300, output=tmp_path / "typo", progress=False)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        run(cu_crystal, cu_model, steps=2.5, output=tmp_path / "half", progress=False)
    with pytest.raises(FileNotFoundError, match="No run to resume"):
        run(None, cu_model, output=tmp_path / "nothing", resume=True, progress=False)
    with pytest.raises(ValueError, match="ensemble must be one of"):
        run(cu_crystal, cu_model, ensemble="nvx", output=tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="compile must be True or False"):
        run(cu_crystal, cu_model, compile="yes", output=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="NPT needs a cell periodic"):
        from ase.build import molecule

        run(molecule("H2O"), eqcalc.build_model("schnet", species=[1, 8], num_features=8), ensemble="npt",
            output=tmp_path / "b", progress=False)


def test_md_without_arguments_runs_nvt_of_the_bundled_molecule(tmp_path, monkeypatch, capsys):
    """With no model or structure given, ``eqcalc md`` runs NVT on the bundled files into ./md_run
    (stand-ins here: the trained default model comes from the training pipeline)."""
    from ase.build import molecule

    from eqcalc.md import defaults

    torch.manual_seed(0)
    stand_ins = {defaults.DEFAULT_MODEL: tmp_path / "model.pt", defaults.DEFAULT_STRUCTURE: tmp_path / "mol.xyz"}
    eqcalc.save_model(eqcalc.build_model("schnet", species=[1, 6, 8], num_features=8, num_interactions=1),
                      stand_ins[defaults.DEFAULT_MODEL])
    molecule("CH3CH2OH").write(stand_ins[defaults.DEFAULT_STRUCTURE])
    monkeypatch.setattr(defaults, "bundled_asset", stand_ins.__getitem__)
    monkeypatch.chdir(tmp_path)
    assert main(["md", "--steps", "10", "--no-progress"]) == 0  # only shortened
    trajectory = read_trajectory(tmp_path / "md_run" / "trajectory.h5")
    assert trajectory.metadata["md"]["ensemble"] == "nvt" and trajectory.step[-1] == 10


def test_a_molecule_that_falls_apart_stops_the_run_naming_the_atom(tmp_path):
    """The fragment guard (opt-in): an H atom sent away at 0.2 Å/fs leaves ethanol; the run stops
    once it is no longer bonded, naming it, and a run without the guard carries on."""
    from ase import units
    from ase.build import molecule

    from tests.md.conftest import MorseModel

    atoms = molecule("CH3CH2OH")
    model = MorseModel([1, 6, 8], cutoff=3.0, depth=0.01, r0=1.1).double()  # too weak to hold the H back
    velocities = np.zeros((len(atoms), 3))
    leaving = 8  # an H of the methyl group
    velocities[leaving] = 0.2 * (atoms.positions[leaving] - atoms.positions[1]) / np.linalg.norm(
        atoms.positions[leaving] - atoms.positions[1])
    atoms.set_velocities(velocities / units.fs)
    settings = dict(ensemble="nve", timestep=0.5, steps=100, velocities="structure", temperature=0.0,
                    max_temperature=1e5, log_interval=1, progress=False)
    stopped = run(atoms, model, output=tmp_path / "guarded", bond_factor=1.5, **settings)
    assert not stopped.completed
    assert f"atom(s) {leaving} (H) are no longer bonded" in stopped.stop_reason
    assert 2 <= stopped.step <= 10  # 1.5 × (0.31 + 0.76) Å is reached within a few steps
    assert run(atoms, model, output=tmp_path / "free", **settings).completed
