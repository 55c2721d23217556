"""The fault and bad-input matrix (issue 20): every command meets every bad input of its kind with one
line on stderr that names the problem, and a non-zero exit; never a traceback, never exit 0.

Rows are bad model files, bad structure files and bad training inputs; columns the commands that
read them. A new command or a new loader belongs in this table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import eqcalc
from eqcalc.cli import main
from eqcalc.models.io import model_payload


def _model(species=("H", "C", "O")):
    torch.manual_seed(0)
    return eqcalc.build_model("schnet", species=list(species), cutoff=3.0, num_features=8, num_interactions=1).double()


def _save_payload(path, change):
    payload = model_payload(_model())
    change(payload)
    torch.save(payload, path)


def _nan_model(path):
    model = _model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    eqcalc.save_model(model, path)


def _flip_bit(payload):
    weight = payload["state_dict"]["embedding.weight"]
    weight.view(torch.int64)[0, 0] ^= 1 << 40


# name -> (how to make the file at `path`, what the message must say)
BAD_MODELS = {
    "missing": (lambda path: None, "does not exist"),
    "directory": (lambda path: path.mkdir(), "is a directory"),
    "text": (lambda path: path.write_text("energy: 1\n"), "not a PyTorch file"),
    "json": (lambda path: path.write_text(json.dumps({"family": "schnet"})), "not a PyTorch file"),
    "random bytes": (lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)), "not a PyTorch file"),
    "other torch file": (lambda path: torch.save({"weights": torch.zeros(3)}, path), "not an eqcalc model"),
    "flipped bit": (lambda path: _save_payload(path, _flip_bit), "checksum"),
    "unknown config key": (lambda path: _save_payload(path, lambda p: p["config"].update(bogus=1)), "bogus"),
    "predicts NaN": (_nan_model, "NaN|not finite|non-finite"),
}


def _structure(path, atoms_or_text):
    if isinstance(atoms_or_text, str):
        path.write_text(atoms_or_text)
    else:
        ase.io.write(path, atoms_or_text, format="extxyz")


def _with_nan_position():
    atoms = molecule("CH3CH2OH")
    atoms.positions[2, 0] = np.nan
    return atoms


def _collapsed():
    atoms = molecule("CH3CH2OH")
    atoms.positions[1] = atoms.positions[0] + [0.05, 0.0, 0.0]
    return atoms


BAD_STRUCTURES = {
    "missing": (None, "does not exist|No such file|not found"),
    "empty": ("", "empty|no structure|holds no"),
    "garbage": ("this is not\na structure file\n", "cannot read|could not read|not a structure"),
    "NaN position": (_with_nan_position(), "NaN|not finite"),
    "element the model lacks": (Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), "Cu"),
    "atoms on top of each other": (_collapsed(), "apart|closer"),
}


def _labelled(atoms: Atoms) -> Atoms:
    atoms = atoms.copy()
    atoms.info["energy"] = -1.0
    atoms.arrays["forces"] = np.zeros((len(atoms), 3))
    return atoms


def run_command(argv, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Warning" not in line]


def assert_one_line_error(code, lines, command, pattern):
    assert code not in (0, None), f"{command}: exit {code}"
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"eqcalc {command}: error:"), lines[0]
    assert "Traceback" not in lines[0]
    assert re.search(pattern, lines[0], re.IGNORECASE), f"{lines[0]!r} does not match {pattern!r}"


def commands_on_model(model, structure, tmp_path):
    return {
        "eval": ["eval", model, structure],
        "check": ["check", model, structure, "--frames", "1"],
        "relax": ["relax", "--model", model, "--structure", structure, "--steps", "2", "--output", tmp_path / "relax"],
        "md": ["md", "--model", model, "--structure", structure, "--steps", "2", "--output", tmp_path / "md",
               "--no-progress"],
    }


@pytest.fixture
def good_model(tmp_path):
    eqcalc.save_model(_model(), tmp_path / "good.pt")
    return tmp_path / "good.pt"


@pytest.fixture
def good_structure(tmp_path):
    path = tmp_path / "ethanol.extxyz"
    ase.io.write(path, [_labelled(molecule("CH3CH2OH"))], format="extxyz")
    return path


@pytest.mark.parametrize("command", ["eval", "check", "relax", "md"])
@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_file(case, command, good_structure, tmp_path, capsys):
    make, pattern = BAD_MODELS[case]
    path = tmp_path / "model.pt"
    make(path)
    code, lines = run_command(commands_on_model(path, good_structure, tmp_path)[command], capsys)
    assert_one_line_error(code, lines, command, pattern)


@pytest.mark.parametrize("command", ["eval", "check", "relax", "md"])
@pytest.mark.parametrize("case", sorted(BAD_STRUCTURES))
def test_bad_structure_file(case, command, good_model, tmp_path, capsys):
    content, pattern = BAD_STRUCTURES[case]
    path = tmp_path / "structure.extxyz"
    if content is not None:
        _structure(path, content if isinstance(content, str) else [_labelled(content)])
    code, lines = run_command(commands_on_model(good_model, path, tmp_path)[command], capsys)
    assert_one_line_error(code, lines, command, pattern)


@pytest.fixture
def ethanol_file():
    """60 rMD17 ethanol frames (CC0): energy and forces."""
    return Path(__file__).parent / "data" / "ethanol_small.extxyz"


@pytest.fixture
def training_file(tmp_path, ethanol_file):
    path = tmp_path / "train.extxyz"
    ase.io.write(path, ase.io.read(ethanol_file, ":12"), format="extxyz")
    return path


def _train(tmp_path, data, *extra):
    return ["train", "--train", data, "--output", tmp_path / "run", "--max-epochs", "1", "--valid-count", "2",
            "--model", "schnet", "--no-progress", *extra]


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_base_model_for_fine_tuning(case, training_file, tmp_path, capsys):
    make, pattern = BAD_MODELS[case]
    path = tmp_path / "base.pt"
    make(path)
    argv = [a for a in _train(tmp_path, training_file, "--init-from", path) if a not in ("--model", "schnet")]
    code, lines = run_command(argv, capsys)
    assert_one_line_error(code, lines, "train", "diverged" if case == "predicts NaN" else pattern)


def _frames_with(ethanol_file, change):
    frames = ase.io.read(ethanol_file, ":12")
    change(frames)
    return frames


BAD_TRAINING_DATA = {
    "missing": (None, "does not exist"),
    "empty": ("", "empty"),
    "garbage": ("not\nxyz\n", "could not read"),
    "energy outlier": (lambda f: f[4].calc.results.__setitem__("energy", 1e6), "frame 4: energy"),
    "frame without atoms": (lambda f: f.insert(3, Atoms()), "no atoms|empty frame|0 atoms"),
    "no labels": (lambda f: [a.__setattr__("calc", None) for a in f], "found no energy, forces or stress"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINING_DATA))
def test_bad_training_data(case, ethanol_file, tmp_path, capsys):
    content, pattern = BAD_TRAINING_DATA[case]
    path = tmp_path / "data.extxyz"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        ase.io.write(path, _frames_with(ethanol_file, content), format="extxyz")
    code, lines = run_command(_train(tmp_path, path), capsys)
    assert_one_line_error(code, lines, "train", pattern)


BAD_TRAINING_OPTIONS = {
    "unknown option in the config": ({"learning_rate": 1e-3}, "learning_rate.*did you mean 'lr'"),
    "negative lr": ({"lr": -1.0}, "lr must be > 0"),
    "text cutoff": ({"model": {"family": "schnet", "cutoff": "five"}}, "cutoff"),
    "unknown family": ({"model": {"family": "schnett"}}, "schnett"),
    "unknown hyper-parameter": ({"model": {"family": "schnet", "hyper": {"num_feature": 8}}},
                                "Did you mean 'num_features' for 'num_feature'"),
    "text hyper-parameter": ({"model": {"family": "mace", "hyper": {"num_channels": "sixteen"}}}, "num_channels.*sixteen"),
    "negative size": ({"model": {"family": "painn", "hyper": {"num_features": -4}}}, "cannot be built.*-4"),
    "absurd size": ({"model": {"family": "nequip", "hyper": {"num_features": 300000}}}, "asks for a tensor of"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINING_OPTIONS))
def test_bad_training_config(case, training_file, tmp_path, capsys):
    import yaml

    options, pattern = BAD_TRAINING_OPTIONS[case]
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"train": str(training_file), "output": str(tmp_path / "run"), **options}))
    code, lines = run_command(["train", config, "--max-epochs", "1", "--no-progress"], capsys)
    assert_one_line_error(code, lines, "train", pattern)


def _truncated_trajectory(path):
    from eqcalc.md.trajectory import Frame, TrajectoryWriter

    writer = TrajectoryWriter(path, np.ones(2, int), np.ones(2), np.zeros(3, bool), {}, {})
    for step in range(20):
        writer.append(Frame(step, float(step), *np.ones((3, 2, 3)), 0.0, np.zeros((3, 3))))
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_TRAJECTORIES = {
    "missing": (lambda path: None, "does not exist"),
    "text": (lambda path: path.write_text("step,energy\n"), "not a readable HDF5 file"),
    "other HDF5 file": (lambda path: __import__("h5py").File(path, "w").close(), "not an eqcalc MD trajectory"),
    "truncated": (_truncated_trajectory, "is truncated"),
}


@pytest.mark.parametrize("action", ["info", "export", "repair"])
@pytest.mark.parametrize("case", sorted(BAD_TRAJECTORIES))
def test_bad_trajectory(case, action, tmp_path, capsys):
    make, pattern = BAD_TRAJECTORIES[case]
    path = tmp_path / "trajectory.h5"
    make(path)
    extra = [tmp_path / "out.extxyz"] if action == "export" else []
    code, lines = run_command(["traj", action, path, *extra], capsys)
    assert_one_line_error(code, lines, "traj", pattern)


def _run_killed_at(first, resume, delays, cwd):
    """Run ``python -m eqcalc.cli first``, kill -9 it after each delay (s) and restart it with the
    arguments ``resume``; the last one runs to the end. Returns how many kills hit a running process."""
    import signal
    import subprocess
    import sys
    import time

    hits = 0
    for k, delay in enumerate([*delays, None]):
        args = [sys.executable, "-m", "eqcalc.cli", *map(str, resume if k else first)]
        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if delay is None:
            assert process.wait(timeout=600) == 0, process.stderr.read().decode()[-2000:]
            break
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            hits += 1
        process.wait()
    return hits


@pytest.mark.slow
def test_training_killed_at_random_moments_resumes_bit_identically(training_file, tmp_path):
    def argv(name, *extra):
        args = _train(tmp_path, training_file, "--max-epochs", "400", "--early-stopping-patience", "1000", "--seed", "5",
                      *extra)
        args[args.index("--output") + 1] = tmp_path / name
        return args

    assert _run_killed_at(argv("reference"), None, [], tmp_path) == 0
    delays = np.random.default_rng(7).uniform(6.0, 14.0, size=4)
    assert _run_killed_at(argv("killed"), argv("killed", "--resume"), delays, tmp_path) >= 2
    reference = torch.load(tmp_path / "reference" / "best_model.pt", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "killed" / "best_model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(reference[name], resumed[name]) for name in reference)


@pytest.mark.slow
def test_md_killed_at_random_moments_resumes_bit_identically(tmp_path):
    def argv(name):  # the bundled model and molecule
        return ["md", "--steps", "4000", "--seed", "2", "--traj-interval", "50", "--no-progress", "--output", tmp_path / name]

    assert _run_killed_at(argv("reference"), None, [], tmp_path) == 0
    delays = np.random.default_rng(3).uniform(6.0, 12.0, size=4)
    resume = ["md", "--output", tmp_path / "killed", "--no-progress", "--resume"]
    assert _run_killed_at(argv("killed"), resume, delays, tmp_path) >= 2
    from eqcalc.md import read_trajectory

    reference, resumed = (read_trajectory(tmp_path / name / "trajectory.h5") for name in ("reference", "killed"))
    np.testing.assert_array_equal(reference.step, resumed.step)
    np.testing.assert_array_equal(reference.positions, resumed.positions)
