"""eqcalc learn (issue 21): train a committee → MD → select → label with a reference ASE calculator →
retrain, for R rounds; resumable after an interruption, refusing changed settings. EMT on a 4-atom Cu
cell is the reference, the models are tiny SchNets trained for two epochs."""

import csv
import json
import re
import sys
import types
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from eqcalc import plotting, selection
from eqcalc.cli import main
from eqcalc.learn import LearnConfig, learn, load_learn_config
from eqcalc.learn import loop as learn_loop
from eqcalc.train.trainer import Trainer

TINY = {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}}
K = 3


def quiet(message):
    pass


def emt_frames(count, seed):
    """Rattled 4-atom fcc Cu cells labelled with EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    ase.io.write(folder / "initial.extxyz", emt_frames(12, 0))
    ase.io.write(folder / "test.extxyz", emt_frames(6, 1))
    bulk("Cu", "fcc", a=3.6, cubic=True).write(folder / "start.extxyz")
    return folder


def settings(inputs, output, **changes):
    values = {
        "output": str(output),
        "initial_data": str(inputs / "initial.extxyz"),
        "test_data": str(inputs / "test.extxyz"),
        "reference": {"calculator": "ase.calculators.emt:EMT"},
        "rounds": 2,
        "committee": 2,
        "train": {"model": TINY, "max_epochs": 2, "batch_size": 4, "valid_count": 2, "lr": 5e-3, "progress": False,
                  "device": "cpu", "seed": 3},
        "md": {"structure": str(inputs / "start.extxyz"), "temperature": 300.0, "steps": 30, "timestep": 1.0,
               "traj_interval": 3, "log_interval": 3},
        "max_force_uncertainty": 0.002,
        "select": {"n": K},
    }
    values.update(changes)
    return values


def write_config(path, values):
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def snapshot(folder):
    """Bytes and modification time of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def metrics(output):
    with open(output / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory):
    """An uninterrupted two-round loop through the command line."""
    folder = tmp_path_factory.mktemp("learn")
    config = write_config(folder / "learn.yaml", settings(inputs, folder / "out"))
    assert main(["learn", str(config)]) == 0
    return folder / "out"


def test_two_rounds_end_to_end(finished, inputs):
    out = finished
    for k in (0, 1):
        folder = out / f"round_{k:03d}"
        for name in ("train/committee.json", "md/trajectory.h5", "md/log.csv", "picked.extxyz", "labelled.extxyz"):
            assert (folder / name).is_file(), (k, name)
        assert (out / "data" / f"train_round_{k:03d}.extxyz").is_file()
    assert (out / "learning.png").is_file() == plotting.available()
    assert yaml.safe_load((out / "config.yaml").read_text())["select"] == {"n": K, "min_uncertainty": None, "max_uncertainty": None,
                                                                         "every": 1}
    # round 1 fine-tunes member k from member k of round 0
    for k in range(2):
        member = yaml.safe_load((out / "round_001" / "train" / f"member_{k}" / "config.yaml").read_text())
        assert member["init_from"] == str(out / "round_000" / "train" / f"member_{k}" / "best_model.pt")
        assert member["train"] == str(out / "data" / "train_round_001.extxyz")
        first = yaml.safe_load((out / "round_000" / "train" / f"member_{k}" / "config.yaml").read_text())
        assert first["init_from"] is None
    state = json.loads((out / "state.json").read_text())
    assert state["rounds"]["1"]["train"]["init_from"] == str(out / "round_000" / "train")
    # the training set grows by the labelled frames, which carry EMT's labels for their positions
    initial = ase.io.read(inputs / "initial.extxyz", ":")
    first, second = (ase.io.read(out / "data" / f"train_round_{k:03d}.extxyz", ":") for k in (0, 1))
    labelled = ase.io.read(out / "round_000" / "labelled.extxyz", ":")
    assert len(first) == len(initial) and len(labelled) == K and len(second) == len(first) + K
    for frame, added in zip(second[len(first):], labelled):
        np.testing.assert_array_equal(frame.positions, added.positions)
        assert frame.get_potential_energy() == added.get_potential_energy()
    picked = ase.io.read(out / "round_000" / "picked.extxyz", ":")
    for frame, pick in zip(labelled, picked):
        np.testing.assert_array_equal(frame.positions, pick.positions)
        assert pick.calc is None and "forces_std" not in pick.arrays
        emt = frame.copy()
        emt.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(emt.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(frame.get_forces(), emt.get_forces(), atol=1e-7)
        np.testing.assert_allclose(frame.get_stress(), emt.get_stress(), atol=1e-9)
        assert frame.info["learn_round"] == 0 and frame.info["source"].endswith("trajectory.h5")
    rows = metrics(out)
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert [int(r["n_train"]) for r in rows] == [12, 12 + K]
    for row in rows:
        assert int(row["frames_picked"]) == int(row["frames_labelled"]) == K and int(row["frames_skipped"]) == 0
        assert float(row["test_f_mae_meV_A"]) > 0 and float(row["test_e_mae_meV_atom"]) >= 0
        assert 0 <= float(row["stable_md_time_fs"]) <= float(row["md_time_fs"]) == 30.0
        assert float(row["max_force_std_eVA"]) > 0 and float(row["wall_s"]) > 0


def test_finetuning_options_apply_from_round_1(finished, inputs, tmp_path):
    values = settings(inputs, tmp_path / "out")
    values["train"] = {**values["train"], "atomic_energies": "keep", "freeze": ["embedding"]}
    config = LearnConfig.from_dict(values)
    assert (config.train["atomic_energies"], config.train["freeze"]) == ("keep", ["embedding"])
    first = config.train_config(0, tmp_path / "t.extxyz", tmp_path / "r0", None, resume=False)
    assert (first.atomic_energies, first.freeze, first.init_from) == ("auto", [], None)
    later = config.train_config(1, tmp_path / "t.extxyz", tmp_path / "r1", finished / "round_000" / "train", resume=False)
    assert (later.atomic_energies, later.freeze, later.committee) == ("keep", ["embedding"], 2)
    assert later.init_from == str(finished / "round_000" / "train") and later.model.cutoff == TINY["cutoff"]


def test_stable_time_is_the_first_step_above_the_limit(finished):
    md = finished / "round_000" / "md"
    uncertain = ase.io.read(md / "uncertain.extxyz", ":") if (md / "uncertain.extxyz").stat().st_size else []
    row = metrics(finished)[0]
    if uncertain:
        assert float(row["stable_md_time_fs"]) == uncertain[0].info["time_fs"]
        assert all(atoms.info["max_force_std"] > 0.002 for atoms in uncertain)
    else:
        assert float(row["stable_md_time_fs"]) == 30.0


class Interrupted(Exception):
    """Stands for a kill in the middle of a stage."""


def test_resume_after_interruptions_redoes_no_finished_stage(finished, inputs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    # rounds: 1 first, then rounds may grow
    learn(LearnConfig.from_dict(settings(inputs, out, rounds=1)), log=quiet)
    assert len(metrics(out)) == 1
    round_0 = snapshot(out / "round_000")
    original = Trainer.train_epoch

    def killed_in_round_1_member_1(self, epoch):
        if self.output.parts[-3:-1] == ("round_001", "train") and self.output.name == "member_1" and epoch == 1:
            raise Interrupted
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", killed_in_round_1_member_1)
    with pytest.raises(Interrupted):
        learn(LearnConfig.from_dict(settings(inputs, out)), log=quiet)
    monkeypatch.undo()
    member_0 = snapshot(out / "round_001" / "train" / "member_0")
    assert not (out / "round_001" / "train" / "committee.json").exists()

    def killed_in_select(self, k, records):
        raise Interrupted

    monkeypatch.setattr(learn_loop._Loop, "stage_select", killed_in_select)
    messages = []
    with pytest.raises(Interrupted):
        learn(LearnConfig.from_dict(settings(inputs, out)), log=messages.append, train_log=messages.append)
    monkeypatch.undo()
    assert any(line.startswith("Resuming from") and "member_1" in line for line in messages)
    assert "Member 0 (seed 3) finished earlier: kept as it is." in messages
    assert snapshot(out / "round_001" / "train" / "member_0") == member_0
    trained = {name: snapshot(out / "round_001" / name) for name in ("train", "md")}
    data = snapshot(out / "data")

    result = learn(LearnConfig.from_dict(settings(inputs, out)), log=quiet)
    assert snapshot(out / "round_000") == round_0
    assert {name: snapshot(out / "round_001" / name) for name in ("train", "md")} == trained
    assert snapshot(out / "data") == data
    assert [row["round"] for row in result.rounds] == [0, 1] and len(metrics(out)) == 2
    assert result.committee() == out / "round_001" / "train"
    # the interrupted runs end where the uninterrupted one does
    for name in ("round_001/labelled.extxyz", "data/train_round_001.extxyz"):
        assert (out / name).read_text().replace(str(out), "OUT") == (finished / name).read_text().replace(
            str(finished), "OUT"), name
    assert [r["n_train"] for r in metrics(out)] == [r["n_train"] for r in metrics(finished)]
    # finished: a rerun does nothing; changed settings are refused, naming the key; --overwrite starts again
    before = snapshot(out / "round_001")
    learn(LearnConfig.from_dict(settings(inputs, out)), log=quiet)
    assert snapshot(out / "round_001") == before
    changed = settings(inputs, out)
    changed["train"] = {**changed["train"], "lr": 1e-3}
    with pytest.raises(ValueError, match=r"other settings \(train\.lr: 0\.005 → 0\.001\).*only rounds may change"):
        learn(LearnConfig.from_dict(changed), log=quiet)
    with pytest.raises(ValueError, match=r"rounds: 1, but .* holds 2 finished rounds"):
        learn(LearnConfig.from_dict(settings(inputs, out, rounds=1)), log=quiet)
    assert snapshot(out / "round_001") == before


def test_random_selection_picks_the_same_count_from_the_trajectory(inputs, tmp_path):
    out = tmp_path / "random"
    result = learn(LearnConfig.from_dict(settings(inputs, out, rounds=1, selection="random", seed=5)), log=quiet)
    state = json.loads((out / "state.json").read_text())["rounds"]["0"]["select"]
    candidates = state["candidates"]
    expected = np.random.default_rng([5, 0]).choice(candidates, size=K, replace=False).tolist()
    assert state["picked"] == K and result.rounds[0]["frames_picked"] == K
    assert state["frames"] == expected  # trajectory frames 0 … candidates-1 (every: 1)
    picked = ase.io.read(out / "round_000" / "picked.extxyz", ":")
    assert [atoms.info["frame"] for atoms in picked] == expected
    assert len(ase.io.read(out / "round_000" / "labelled.extxyz", ":")) == K


def test_uncertainty_selection_keeps_inside_the_window(inputs, tmp_path):
    out = tmp_path / "window"
    values = settings(inputs, out, rounds=1)
    probe = learn(LearnConfig.from_dict(values), log=quiet)  # the same MD (same seed), no upper bound
    spreads = selection.stored_uncertainties(selection.read_candidates([out / "round_000" / "md" / "trajectory.h5"]))
    cut = float(np.sort(spreads)[-2])  # leaves out the most uncertain frame
    values = settings(inputs, tmp_path / "window_cut", rounds=1)
    values["select"] = {"n": K, "max_uncertainty": cut}
    learn(LearnConfig.from_dict(values), log=quiet)
    state = json.loads((tmp_path / "window_cut" / "state.json").read_text())["rounds"]["0"]["select"]
    assert probe.rounds[0]["max_force_std_eVA"] >= spreads.max()
    assert state["eligible"] == int(np.sum(spreads <= cut)) and max(state["uncertainties"]) <= cut
    assert int(np.argmax(spreads)) not in state["frames"]


class FlakyEMT(EMT):
    """EMT that fails with an exception on the first frame it labels and returns NaN forces on the second."""

    calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        FlakyEMT.calls += 1
        if FlakyEMT.calls == 1:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes)
        if FlakyEMT.calls == 2:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def test_reference_failures_skip_the_frame_and_are_counted(inputs, tmp_path, monkeypatch):
    module = types.ModuleType("flaky_reference")
    module.FlakyEMT = FlakyEMT
    monkeypatch.setitem(sys.modules, "flaky_reference", module)
    FlakyEMT.calls = 0
    out = tmp_path / "flaky"
    values = settings(inputs, out, rounds=1, reference={"calculator": "flaky_reference:FlakyEMT"})
    values["select"] = {"n": 4}
    with pytest.warns(UserWarning, match="the reference failed on picked frame") as caught:
        result = learn(LearnConfig.from_dict(values), log=quiet)
    assert len([w for w in caught if "the reference failed" in str(w.message)]) == 2
    row = result.rounds[0]
    assert (row["frames_picked"], row["frames_labelled"], row["frames_skipped"]) == (4, 2, 2)
    assert metrics(out)[0]["frames_skipped"] == "2"
    skipped = json.loads((out / "state.json").read_text())["rounds"]["0"]["label"]["skipped"]
    assert [s["frame"] for s in skipped] == [0, 1]
    assert "SCF did not converge" in skipped[0]["reason"] and "non-finite forces" in skipped[1]["reason"]
    log = (out / "learn.log").read_text()
    assert log.count("warning: round 0: the reference failed") == 2
    picked = ase.io.read(out / "round_000" / "picked.extxyz", ":")
    labelled = ase.io.read(out / "round_000" / "labelled.extxyz", ":")
    for frame, pick in zip(labelled, picked[2:]):
        np.testing.assert_array_equal(frame.positions, pick.positions)
        assert np.isfinite(frame.get_forces()).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v.update(round=3), r"round: unknown option\. Did you mean 'rounds'\?"),
        (lambda v: v.update(selct={"n": 2}), r"selct: unknown option\. Did you mean 'select'\?"),
        (lambda v: v["select"].update(count=2), r"select\.count: unknown option"),
        (lambda v: v["md"].update(temprature=300), r"md\.temprature: unknown option\. Did you mean 'temperature'\?"),
        (lambda v: v["train"].update(max_epoch=2), r"train: max_epoch: unknown option\. Did you mean 'max_epochs'\?"),
        (lambda v: v["train"].update(output="x"), r"train\.output: set by the loop .*; remove it\.$"),
        (lambda v: v["train"].update(init_from="x.pt"), r"train\.init_from: set by the loop .*; remove it\.$"),
        (lambda v: v["train"].update(committee=3), r"train\.committee: set by the loop .*top level"),
        (lambda v: v["train"].update(train="x.extxyz"), r"train\.train: set by the loop .*initial_data"),
        (lambda v: v["md"].update(uncertainty_action="stop"), r"md\.uncertainty_action: set by the loop"),
        (lambda v: v["train"].update(lr="fast"), r"train: lr: expected float, got 'fast'"),
        (lambda v: v.update(committee=1), r"committee must be ≥ 2"),
        (lambda v: v.update(selection="best"), r"selection: expected 'uncertainty' \| 'random'"),
        (lambda v: v.update(max_force_uncertainty=-1), r"max_force_uncertainty must be > 0"),
        (lambda v: v["select"].update(min_uncertainty=0.5, max_uncertainty=0.2),
         r"select\.max_uncertainty must be ≥ select\.min_uncertainty"),
        (lambda v: v.pop("max_force_uncertainty"), r"max_force_uncertainty: required"),
        (lambda v: v["md"].update(timestep=-1.0), r"md: timestep must be positive"),
        (lambda v: v["md"].pop("structure"), r"md\.structure: required"),
        (lambda v: v["md"].update(structure="nope.xyz"), r"md\.structure: 'nope\.xyz' does not exist"),
        (lambda v: v.update(initial_data="nope.extxyz"), r"initial_data: 'nope\.extxyz' does not exist"),
        (lambda v: v.update(reference={"calculator": "no_such_module.ase:Calc"}),
         r"reference\.calculator: cannot import 'no_such_module\.ase' .*pip install no_such_module\.$"),
        (lambda v: v.update(reference={"calculator": "ase.calculators.emt:EMTT"}),
         r"has no calculator class 'EMTT'\. Did you mean 'EMT'\?"),
        (lambda v: v.update(reference={"calculator": "EMT"}), r'reference\.calculator: expected "module:Class"'),
    ],
)
def test_config_errors_are_one_line_before_any_work(inputs, tmp_path, capsys, change, message):
    values = settings(inputs, tmp_path / "out")
    values["train"], values["md"], values["select"] = dict(values["train"]), dict(values["md"]), dict(values["select"])
    change(values)
    config = write_config(tmp_path / "learn.yaml", values)
    assert main(["learn", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"eqcalc learn: error: {config}: "), error
    assert re.search(message, error.strip()), error
    assert not (tmp_path / "out").exists()


def test_missing_tblite_names_the_extra(inputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite", None)  # import tblite raises ImportError, as when not installed
    monkeypatch.delitem(sys.modules, "tblite.ase", raising=False)
    values = settings(inputs, tmp_path / "out", reference={"calculator": "tblite.ase:TBLite"})
    with pytest.raises(ValueError, match=r"cannot import 'tblite\.ase' .*pip install \"eqcalc\[xtb\]\""):
        load_learn_config(write_config(tmp_path / "learn.yaml", values))


def test_shipped_example_configs_are_valid_and_twins():
    root = Path(__file__).resolve().parents[1] / "configs"
    configs = [LearnConfig.from_dict(yaml.safe_load((root / name).read_text()), name)
               for name in ("learn_ethanol_xtb.yaml", "learn_ethanol_xtb_random.yaml")]
    uncertainty, random = configs
    assert (uncertainty.selection, random.selection) == ("uncertainty", "random")
    assert uncertainty.reference.calculator == "tblite.ase:TBLite"
    assert (uncertainty.rounds, uncertainty.committee, uncertainty.select.n) == (4, 3, 10)
    assert 500 <= uncertainty.md["temperature"] <= 1000
    differ = {key for key, value in uncertainty.to_dict().items() if random.to_dict()[key] != value}
    assert differ == {"selection", "output"}
