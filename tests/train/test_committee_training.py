"""Committee training (committee: N): one split, seeds seed + k, bootstrap, resume, init_from a committee,
committee.json and the calculator loading the folder."""

import json
import re
import shutil
from pathlib import Path

import ase.io
import pytest
import torch

from eqcalc import EquivariantCalculator
from eqcalc.cli import build_parser, main
from eqcalc.committee import committee_files, resolve_models
from eqcalc.train.committee import member_config, train_committee
from eqcalc.train.config import config_from_args, load_config
from eqcalc.train.trainer import Trainer

TINY = {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}}
DATA = Path(__file__).resolve().parents[1] / "data"
TINY_FLAGS = ["--model", "schnet", "--cutoff", "3", "--hyper", "{num_features: 8, num_interactions: 1, num_basis: 8}"]


def options(train_file, output, **extra):
    return {
        "train": str(train_file), "valid_count": 4, "batch_size": 4, "output": str(output), "progress": False,
        "model": TINY, "seed": 3, "lr": 5e-3, "ema_decay": 0.9, "device": "cpu", "max_epochs": 2, "committee": 3,
        **extra,
    }


def quiet(message):
    pass


def weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def snapshot(folder):
    """Bytes and modification time of every file in ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.extxyz"
    ase.io.write(path, ase.io.read(DATA / "ethanol_small.extxyz", ":24"))
    return path


@pytest.fixture(scope="module")
def committee(data_file, tmp_path_factory):
    """A committee of three tiny SchNets, two epochs each (seeds 3, 4, 5)."""
    output = tmp_path_factory.mktemp("committee") / "out"
    summary = train_committee(load_config(overrides=options(data_file, output)), log=quiet)
    return output, summary


def test_members_share_the_split_and_differ_in_weights(committee):
    output, summary = committee
    assert [record["seed"] for record in summary["members"]] == [3, 4, 5]
    splits = []
    for k in range(3):
        folder = output / f"member_{k}"
        for name in ("train.log", "config.yaml", "splits.json", "metrics.csv", "best_model.pt", "checkpoint.pt",
                     "finished.json"):
            assert (folder / name).is_file(), (k, name)
        saved = load_config(folder / "config.yaml")  # an ordinary run's settings
        assert (saved.seed, saved.committee, saved.output) == (3 + k, 1, str(folder))
        splits.append(json.loads((folder / "splits.json").read_text()))
    assert splits[0] == splits[1] == splits[2]
    assert sorted(splits[0]["train"]["frames"] + splits[0]["valid"]["frames"]) == list(range(24))
    models = [weights(output / f"member_{k}" / "best_model.pt") for k in range(3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert not torch.equal(models[a]["embedding.weight"], models[b]["embedding.weight"]), (a, b)
    record = json.loads((output / "committee.json").read_text())
    assert record["members"] == ["member_0/best_model.pt", "member_1/best_model.pt", "member_2/best_model.pt"]
    assert (record["size"], record["bootstrap"], record["seeds"]) == (3, False, [3, 4, 5])
    files = [output / f"member_{k}" / "best_model.pt" for k in range(3)]
    assert committee_files(output) == committee_files(output / "committee.json") == files
    assert resolve_models(str(output)) == files
    assert summary["committee"] == output / "committee.json"


def test_the_calculator_loads_the_committee_folder(committee, data_file):
    output, _ = committee
    atoms = ase.io.read(data_file, 0)
    atoms.calc = EquivariantCalculator(str(output))
    energy, forces_std = atoms.get_potential_energy(), atoms.calc.results["forces_std"]
    assert forces_std.shape == (len(atoms),) and (forces_std > 0).all()
    assert atoms.calc.results["energy_committee"].shape == (3,)
    members = atoms.copy()
    members.calc = EquivariantCalculator(committee_files(output))
    assert members.get_potential_energy() == pytest.approx(energy, rel=1e-12)


def test_bootstrap_members_train_on_recorded_resamples(data_file, tmp_path, capsys):
    output = tmp_path / "boot"
    assert main(["train", "--train", str(data_file), *TINY_FLAGS, "--max-epochs", "1", "--valid-count", "4",
                 "--batch-size", "4", "--seed", "7", "--committee", "2", "--bootstrap", "--output", str(output),
                 "--no-progress", "--device", "cpu"]) == 0
    assert f"EquivariantCalculator({str(output)!r})" in capsys.readouterr().out.splitlines()[-1]
    splits = [json.loads((output / f"member_{k}" / "splits.json").read_text()) for k in range(2)]
    assert splits[0]["valid"] == splits[1]["valid"]
    shared = set(range(24)) - set(splits[0]["valid"]["frames"])
    drawn = [s["train"]["frames"] for s in splits]
    assert [s["train"]["bootstrap_seed"] for s in splits] == [7, 8]
    for frames in drawn:
        assert len(frames) == len(shared) and set(frames) <= shared and len(set(frames)) < len(frames)  # repeats
    assert drawn[0] != drawn[1]
    assert json.loads((output / "committee.json").read_text())["bootstrap"] is True


class Interrupted(Exception):
    """Stands for a kill in the middle of an epoch."""


def test_resume_finishes_an_interrupted_committee_without_touching_finished_members(
    committee, data_file, tmp_path, monkeypatch
):
    reference, _ = committee
    output = tmp_path / "out"
    config = options(data_file, output)
    original = Trainer.train_epoch

    def killed_in_member_1s_second_epoch(self, epoch):
        if self.output.name == "member_1" and epoch == 1:
            raise Interrupted
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", killed_in_member_1s_second_epoch)
    with pytest.raises(Interrupted):
        train_committee(load_config(overrides=config), log=quiet)
    monkeypatch.undo()
    assert not (output / "committee.json").exists() and not (output / "member_2").exists()
    assert not (output / "member_1" / "finished.json").exists()
    assert torch.load(output / "member_1" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    finished = snapshot(output / "member_0")
    with pytest.raises(ValueError, match="--resume"):
        train_committee(load_config(overrides=config), log=quiet)
    log = []
    train_committee(load_config(overrides={**config, "resume": True}), log=log.append)
    assert snapshot(output / "member_0") == finished
    assert "Member 0 (seed 3) finished earlier: kept as it is." in log
    assert any(line.startswith("Resuming from") and "member_1" in line for line in log)
    for k in (1, 2):  # the resumed and the remaining member equal those of the uninterrupted committee
        a = torch.load(reference / f"member_{k}" / "checkpoint.pt", weights_only=True)
        b = torch.load(output / f"member_{k}" / "checkpoint.pt", weights_only=True)
        assert a["epoch"] == b["epoch"] == 2
        for name, value in a["model"]["state_dict"].items():
            torch.testing.assert_close(b["model"]["state_dict"][name], value, rtol=1e-12, atol=1e-14)
    assert committee_files(output) == [output / f"member_{k}" / "best_model.pt" for k in range(3)]


def test_init_from_a_committee_starts_member_k_from_its_member_k(committee, data_file, tmp_path):
    previous, _ = committee
    output = tmp_path / "next"
    config = load_config(overrides=options(data_file, output, init_from=str(previous), lr=1e-12, min_lr=0.0,
                                           atomic_energies="keep", max_epochs=1))
    train_committee(config, log=quiet)
    before = [weights(previous / f"member_{k}" / "best_model.pt") for k in range(3)]
    for k in range(3):
        after = weights(output / f"member_{k}" / "best_model.pt")
        for name, value in before[k].items():
            torch.testing.assert_close(after[name], value, rtol=0, atol=1e-9)
        assert not torch.allclose(after["embedding.weight"], before[(k + 1) % 3]["embedding.weight"], atol=1e-6)
        assert load_config(output / f"member_{k}" / "config.yaml").init_from == str(previous / f"member_{k}" / "best_model.pt")
    single = str(previous / "member_0" / "best_model.pt")  # a model file: every member starts from it
    config = load_config(overrides=options(data_file, tmp_path / "x", init_from=single, committee=2))
    assert [(member_config(config, k).init_from, member_config(config, k).seed) for k in range(2)] == [(single, 3), (single, 4)]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--committee", "0"], r"committee must be ≥ 1\.$"),
        (["--committee", "1.5"], r"committee: expected int, got 1\.5 \(float\)\.$"),
        (["--committee", "two"], r"committee: expected int, got 'two'"),
        (["--bootstrap"], r"committee_bootstrap resamples .* set committee: N \(--committee N\) with N ≥ 2"),
        (["--committee", "2", "--max-epochs", "0"], r"max_epochs must be ≥ 1 for a committee"),
        (["--init-from", "{previous}"], r"init_from: '.*out' is a committee of 3; set committee: 3 \(--committee 3\)"),
        (["--init-from", "{previous}", "--committee", "2"], r"is a committee of 3; set committee: 3"),
        (["--committee", "3", "--output", "{previous}"], r"holds a committee\. Continue it with --resume"),
        (["--output", "{previous}"], r"holds a committee of 3 \(member_0 …\): continue or replace it with --committee 3"),
        (["--committee", "3", "--output", "{previous}", "--resume", "--lr", "0.1"], r"Cannot resume .* lr: 0\.005 → 0\.1"),
        (["--committee", "2", "--output", "{empty}", "--resume"], r"No committee to resume in"),
        (["--committee", "2", "--output", "{single}", "--resume"], r"holds a single run, not a committee"),
        (["--committee", "2", "--output", "{single}"], r"holds a run\. Continue it with --resume"),
    ],
)
def test_bad_committee_options_are_one_line_errors_before_data_is_read(committee, tmp_path, capsys, flags, message):
    previous, _ = committee
    missing = tmp_path / "no-such-data.extxyz"  # reading it would be another error
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "checkpoint.pt").touch()  # a single run's folder
    flags = [f.format(previous=previous, empty=tmp_path / "empty", single=tmp_path / "single") for f in flags]
    base = ["train", "--train", str(missing), "--lr", "5e-3", "--no-progress", "--device", "cpu"]
    assert main(base + flags) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("eqcalc train: error: ")
    assert re.search(message, error.strip()), error


def test_committee_keys_in_yaml_and_flags(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("train: a.xyz\ncommittee: 4\ncommittee_bootstrap: true\n")
    config = load_config(path)
    assert (config.committee, config.committee_bootstrap) == (4, True)
    args = build_parser().parse_args(["train", "--train", "a.xyz", "--committee", "2", "--bootstrap"])
    assert (config_from_args(args).committee, config_from_args(args).committee_bootstrap) == (2, True)
    path.write_text("train: a.xyz\ncommitee: 4\n")
    with pytest.raises(ValueError, match="commitee: unknown option. Did you mean 'committee'"):
        load_config(path)
    assert load_config(overrides={"train": "a.xyz"}).committee == 1


def test_committee_file_problems_are_named(committee, tmp_path):
    previous, _ = committee
    folder = tmp_path / "copy"
    shutil.copytree(previous, folder)
    shutil.rmtree(folder / "member_1")
    with pytest.raises(FileNotFoundError, match=r"do not exist: \['member_1/best_model.pt'\]\. Restore them, or delete"):
        committee_files(folder)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        EquivariantCalculator(folder)
    (folder / "committee.json").write_text('{"members": ["member_0/best')
    with pytest.raises(ValueError, match="committee.json' is damaged"):
        committee_files(folder / "committee.json")
    (folder / "committee.json").write_text('{"members": []}')
    with pytest.raises(ValueError, match="not an eqcalc committee record"):
        committee_files(folder)
    (folder / "committee.json").unlink()
    with pytest.raises(FileNotFoundError, match="neither a model file nor a finished committee"):
        EquivariantCalculator(str(folder))
    model_file = previous / "member_0" / "best_model.pt"
    assert resolve_models(model_file) is model_file and resolve_models([str(model_file)]) == [str(model_file)]
