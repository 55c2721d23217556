"""Uncertainty-aware MD (issue 21): a committee's mean drives the run, its force spread is logged,
stored per frame, and with --max-force-uncertainty stops the run or collects the uncertain frames."""

import h5py
import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read

import eqcalc
from eqcalc.cli import main
from eqcalc.md import read_trajectory, repair_trajectory, run
from eqcalc.md.log import read_log
from eqcalc.md.trajectory import FRAME_FIELDS, Frame, TrajectoryWriter
from eqcalc.md.uncertain import complete_frames

STEPS = 40
SETTINGS = dict(ensemble="nvt", temperature=500.0, timestep=0.5, seed=1, traj_interval=5, progress=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two untrained SchNet models (seeds 0 and 1) for H, C, O as files, and ethanol."""
    folder = tmp_path_factory.mktemp("committee")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = eqcalc.build_model("schnet", species=[1, 6, 8], cutoff=3.0, num_features=8, num_interactions=1)
        paths.append(folder / f"member{seed}.pt")
        eqcalc.save_model(model.double(), paths[-1])
    structure = folder / "ethanol.extxyz"
    molecule("CH3CH2OH").write(structure)
    return [str(p) for p in paths], structure


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    """An uninterrupted committee run logging and saving every step, and its largest force spread per
    step (eV/Å)."""
    models, structure = files
    result = run(read(structure), models, steps=STEPS, log_interval=1, output=tmp_path_factory.mktemp("ref") / "run",
                 **{**SETTINGS, "traj_interval": 1})
    assert result.completed, result.stop_reason
    spread = read_log(result.log)["max_force_std_eVA"]
    assert len(spread) == STEPS + 1
    return result, spread


@pytest.fixture(scope="module")
def limit(reference):
    """A limit between the smallest and the largest spread of the reference run, so that it is first
    exceeded in the middle of the run (the untrained members drift apart as the molecule heats up)."""
    spread = reference[1]
    value = float(0.5 * (spread.min() + spread.max()))
    first = int(np.argmax(spread > value))
    assert 5 <= first <= STEPS - 5, (first, spread)
    return value


def test_committee_spread_is_logged_stored_and_exported(files, reference, tmp_path):
    models, _ = files
    result, spread = reference
    assert result.committee_size == 2
    log = read_log(result.log)
    trajectory = read_trajectory(result.trajectory)
    assert trajectory.forces_std.shape == (len(trajectory), len(trajectory.numbers))
    calc = eqcalc.EquivariantCalculator(models)
    for index in (10, STEPS):  # frames of steps 10 and 40
        atoms = trajectory.atoms(index)
        atoms.calc = calc
        atoms.get_forces()
        row = int(np.flatnonzero(log["step"] == trajectory.step[index])[0])
        np.testing.assert_allclose(spread[row], calc.results["forces_std"].max(), rtol=1e-10, atol=0)
        np.testing.assert_allclose(log["energy_std_eV"][row], calc.results["energy_std"], rtol=1e-10, atol=0)
        np.testing.assert_allclose(trajectory.forces_std[index], calc.results["forces_std"], rtol=1e-10, atol=1e-14)
    from eqcalc import plotting

    assert (result.output / "uncertainty.png").is_file() == plotting.available()

    assert main(["traj", "export", str(result.trajectory), str(tmp_path / "frames.extxyz")]) == 0
    frames = read(tmp_path / "frames.extxyz", ":")
    assert [f.info["step"] for f in frames] == list(trajectory.step)
    np.testing.assert_allclose(np.array([f.arrays["forces_std"] for f in frames]), trajectory.forces_std,
                               atol=1e-8)  # extxyz keeps 8 decimals


def test_stop_at_the_first_step_above_the_limit(files, reference, limit, tmp_path, capsys):
    models, structure = files
    spread = reference[1]
    first = int(np.argmax(spread > limit))
    per_atom = read_trajectory(reference[0].trajectory).forces_std[first]  # the reference saved every step
    atom = int(np.argmax(per_atom))
    output = tmp_path / "stop"
    code = main(["md", "--model", *models, "--structure", str(structure), "--output", str(output), "--steps",
                 str(STEPS), "--ensemble", "nvt", "--temperature", "500", "--timestep", "0.5", "--seed", "1",
                 "--log-interval", "5", "--max-force-uncertainty", repr(limit), "--no-progress"])
    assert code == 3
    err = capsys.readouterr().err
    assert (f"Stopped after step {first - 1}: at step {first} the committee's force spread on atom {atom} is "
            f"{per_atom[atom]:.3g} eV/Å, above the limit of {limit:g} eV/Å") in err
    assert "retrain" in err and "eqcalc select" in err
    trajectory = read_trajectory(output / "trajectory.h5")
    assert trajectory.step[-1] == first - 1  # ends with the last good frame
    assert trajectory.forces_std.max() <= limit


def test_save_writes_exactly_the_steps_above_the_limit_and_continues(files, reference, limit, tmp_path, capsys):
    models, structure = files
    spread = reference[1]
    config = tmp_path / "md.yaml"
    config.write_text(
        f"model: [{models[0]}, {models[1]}]\nstructure: {structure}\nsteps: {STEPS}\nensemble: nvt\n"
        f"temperature: 500\ntimestep: 0.5\nseed: 1\nlog_interval: 10\nmax_force_uncertainty: {limit!r}\n"
        "uncertainty_action: save\n"
    )
    output = tmp_path / "save"
    assert main(["md", "--config", str(config), "--output", str(output), "--no-progress"]) == 0
    expected = np.flatnonzero(spread > limit)
    assert 0 < len(expected) < STEPS
    assert f"Saved {len(expected)} frames" in capsys.readouterr().out
    frames = read(output / "uncertain.extxyz", ":")
    np.testing.assert_array_equal([f.info["step"] for f in frames], expected)  # every step, not only logged ones
    np.testing.assert_allclose([f.info["max_force_std"] for f in frames], spread[expected], rtol=1e-9)
    np.testing.assert_allclose([f.arrays["forces_std"].max() for f in frames], spread[expected], atol=1e-8)
    np.testing.assert_allclose([f.info["time_fs"] for f in frames], 0.5 * expected)
    assert all(f.calc is None for f in frames)  # no energy or forces: the committee's guesses are no labels
    trajectory = read_trajectory(output / "trajectory.h5")
    assert trajectory.step[-1] == STEPS
    reference_positions = read_trajectory(reference[0].trajectory).positions[trajectory.step]
    np.testing.assert_allclose(trajectory.positions, reference_positions, rtol=0, atol=1e-12)


def test_resume_continues_identically_and_saves_no_frame_twice(files, reference, limit, tmp_path):
    """A committee run killed after step 27 (emulated: its trajectory cut back to the frame of step 20, half a
    frame at the end of uncertain.extxyz) and resumed with `eqcalc md --resume` (the recorded committee)
    equals an uninterrupted one: the steps 21–27 it recomputes are saved once."""
    models, structure = files
    settings = dict(SETTINGS, log_interval=5, max_force_uncertainty=limit, uncertainty_action="save")
    whole = run(read(structure), models, steps=STEPS, output=tmp_path / "whole", **settings)
    split = tmp_path / "split"
    run(read(structure), models, steps=27, output=split, **settings)
    saved = [step for step, _ in complete_frames(split / "uncertain.extxyz")]
    assert any(step > 20 for step in saved), saved  # frames a naive resume would write twice
    with h5py.File(split / "trajectory.h5", "r+") as handle:  # the run as a kill after step 27 leaves it
        for name in [*FRAME_FIELDS, "step", "forces_std"] + [f"integrator/{k}" for k in handle["integrator"]]:
            handle[name].resize(int(np.searchsorted(handle["step"][()], 20, side="right")), axis=0)
    with open(split / "uncertain.extxyz", "a") as handle:
        handle.write("9\nProperties=species:S:1:pos:R:3 step=28\nC 0.0 0.")
    assert main(["md", "--resume", "--output", str(split), "--steps", str(STEPS), "--no-progress"]) == 0

    a, b = read_trajectory(whole.trajectory), read_trajectory(split / "trajectory.h5")
    np.testing.assert_array_equal(b.step, a.step)
    np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.forces_std, a.forces_std, rtol=0, atol=1e-11)
    log_a, log_b = read_log(whole.log), read_log(split / "log.csv")
    np.testing.assert_array_equal(log_b["step"], log_a["step"])
    np.testing.assert_allclose(log_b["max_force_std_eVA"], log_a["max_force_std_eVA"], rtol=0, atol=1e-11)
    steps_a = [step for step, _ in complete_frames(whole.uncertain)]
    steps_b = [step for step, _ in complete_frames(split / "uncertain.extxyz")]
    assert steps_b == steps_a == list(np.flatnonzero(reference[1] > limit))
    assert len(read(split / "uncertain.extxyz", ":")) == len(steps_a)  # no partial frame left


def test_a_limit_with_a_single_model_is_a_one_line_error(files, tmp_path, capsys):
    models, structure = files
    output = tmp_path / "single"
    code = main(["md", "--model", models[0], "--structure", str(structure), "--output", str(output), "--steps", "5",
                 "--max-force-uncertainty", "0.1", "--no-progress"])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("eqcalc md: error:") and "needs a committee" in lines[0], lines
    assert "several --model files or a committee folder" in lines[0]
    assert not output.exists()  # refused before the run started


def test_single_model_trajectories_keep_their_format_and_resume(files, tmp_path):
    """Single-model runs write the layout written before committees (no forces_std), which reads,
    exports, repairs and resumes; resuming it with a committee is refused by name."""
    models, structure = files
    result = run(read(structure), models[0], steps=10, log_interval=5, output=tmp_path / "one", **SETTINGS)
    with h5py.File(result.trajectory, "r") as handle:
        assert "forces_std" not in handle
    assert "max_force_std_eVA" not in read_log(result.log)
    assert not (result.output / "uncertainty.png").exists()
    with pytest.raises(ValueError, match="made with a single model and cannot be resumed with a committee"):
        run(None, models, steps=20, output=result.output, resume=True, progress=False)
    assert run(None, None, steps=20, output=result.output, resume=True, progress=False).completed


def test_a_file_written_before_committees_reads_exports_and_repairs(tmp_path):
    """A trajectory in the original layout, written directly with h5py."""
    path = tmp_path / "old.h5"
    n, frames = 3, 4
    with h5py.File(path, "w", libver="latest") as handle:
        handle.attrs.update(format="eqcalc-md-trajectory", format_version=1, metadata='{"model": "m.pt"}')
        handle["numbers"], handle["masses"], handle["pbc"] = np.array([8, 1, 1]), np.ones(n), np.zeros(3, bool)
        handle["step"], handle["time"] = np.arange(frames), 0.5 * np.arange(frames)
        for name, shape in (("positions", (n, 3)), ("velocities", (n, 3)), ("forces", (n, 3)), ("cell", (3, 3))):
            handle.create_dataset(name, data=np.random.default_rng(0).random((frames, *shape)), maxshape=(None, *shape))
        handle.create_dataset("potential_energy", data=np.zeros(frames), maxshape=(None,))
        handle.create_dataset("integrator/rng", data=np.zeros((frames, 2)), maxshape=(None, 2))
        for name in ("step", "time"):
            data = handle[name][()]
            del handle[name]
            handle.create_dataset(name, data=data, maxshape=(None,))
    trajectory = read_trajectory(path)
    assert len(trajectory) == frames and trajectory.forces_std is None and trajectory.frame(1).forces_std is None
    assert "forces_std" not in trajectory.atoms(0).arrays
    assert repair_trajectory(path) == frames
    assert main(["traj", "export", str(path), str(tmp_path / "old.extxyz")]) == 0
    assert "forces_std" not in read(tmp_path / "old.extxyz").arrays
    writer = TrajectoryWriter.continue_file(path, {"model": "m.pt"})
    with pytest.raises(ValueError, match="does not fit"):  # a frame with a spread does not go into this file
        writer.append(Frame(4, 2.0, *np.ones((3, n, 3)), 0.0, np.eye(3), {"rng": np.zeros(2)}, forces_std=np.ones(n)))
    writer.close()
    assert len(read_trajectory(path)) == frames


def test_a_model_with_a_fitted_uncertainty_logs_and_limits_like_a_committee(files, tmp_path):
    """One model whose file holds an LLPR fit (eqcalc.llpr, fitted without validation energies):
    the spread is logged and stored, energy_std is an empty cell, and the limit applies."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from eqcalc.llpr import fit_llpr

    models, structure = files
    teacher, model = eqcalc.load_model(models[0]), eqcalc.load_model(models[1])
    frames = []
    for k in range(6):
        atoms = read(structure)
        atoms.rattle(0.05, seed=k)
        atoms.calc = eqcalc.EquivariantCalculator(teacher)
        atoms.calc = SinglePointCalculator(atoms, forces=atoms.get_forces())
        frames.append(atoms)
    model.uncertainty = fit_llpr(model, frames[:4], frames[4:])
    path = tmp_path / "llpr.pt"
    eqcalc.save_model(model, path)
    result = run(read(structure), str(path), steps=10, log_interval=1, output=tmp_path / "run", **SETTINGS)
    log = read_log(result.log)
    assert np.isnan(log["energy_std_eV"]).all() and (log["max_force_std_eVA"] > 0).all()
    limit = float(np.median(log["max_force_std_eVA"]))
    stopped = run(read(structure), str(path), steps=10, output=tmp_path / "stopped", max_force_uncertainty=limit,
                  **SETTINGS)
    assert not stopped.completed and "spread" in stopped.stop_reason
