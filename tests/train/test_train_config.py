"""Training config: YAML + flags, unknown keys and wrong types named in the error."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from eqcalc.cli import build_parser
from eqcalc.train.config import ModelSection, TrainConfig, config_from_args, load_config
from eqcalc.train.trainer import build_family_model

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "example_train.yaml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_example_config_documents_every_option_and_loads():
    values = yaml.safe_load(EXAMPLE.read_text())
    assert set(values) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(values["model"]) == {f.name for f in dataclasses.fields(ModelSection)}
    config = load_config(EXAMPLE)
    defaults = TrainConfig().to_dict()
    stated = config.to_dict()
    differing = {key for key in defaults if stated[key] != defaults[key]}
    assert differing == {"train", "output", "model"}, "the example config states the defaults"
    assert {**stated["model"], "hyper": {}} == defaults["model"]
    family_defaults = build_family_model(TrainConfig(), {"species": [1, 8]}).hyperparameters()
    assert {**family_defaults, **config.model.hyper} == family_defaults  # the hyper it lists are training's defaults


@pytest.mark.parametrize(
    "text, message",
    [
        ("train: a.xyz\nmax_epoch: 3\n", r"max_epoch: unknown option\. Did you mean 'max_epochs'"),
        ("train: a.xyz\nmax_epochs: ten\n", r"max_epochs: expected int or 'auto', got 'ten'"),
        ("train: a.xyz\namsgrad: 1\n", r"amsgrad: expected bool"),
        ("train: a.xyz\nscheduler: linear\n", r"scheduler: expected 'plateau' \| 'cosine' \| 'none'"),
        ("train: a.xyz\nmodel: {family: schnet, width: 3}\n", r"model\.width: unknown option"),
        ("train: a.xyz\nmodel: {cutoff: big}\n", r"model\.cutoff: expected float"),
        ("train: a.xyz\nbatch_size: 0\n", r"batch_size must be ≥ 1"),
        ("max_epochs: 3\n", r"No training data"),
        ("train: !!python/object/apply:os.system [ls]\n", r"not valid YAML"),
        ("- train\n", r"mapping"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path, text))


def test_flags_override_the_file_and_model_section_merges(tmp_path):
    path = write(tmp_path, "train: a.xyz\nlr: 1e-3\nmodel:\n  family: schnet\n  hyper: {num_features: 8, num_basis: 4}\n")
    assert load_config(path).lr == 1e-3  # PyYAML reads 1e-3 as text; accepted as a float
    config = parse(str(path), "--lr", "5e-4", "--max-epochs", "7", "--hyper", "{num_features: 16}",
                   "--cutoff", "4", "--no-amsgrad", "--valid", "v.xyz", "--clip-grad-norm", "null")
    assert (config.lr, config.max_epochs, config.amsgrad, config.valid, config.clip_grad_norm) == (5e-4, 7, False, "v.xyz", None)
    assert config.model.hyper == {"num_features": 16, "num_basis": 4} and config.model.cutoff == 4.0
    assert config.train == "a.xyz"


def test_flags_alone_are_a_complete_config():
    config = parse("--train", "data.extxyz", "--model", "painn", "--max-epochs", "3", "--output", "out",
                   "--atomic-energies", "{H: -13.6}", "--energy-scale", "auto")
    assert (config.train, config.model.family, config.max_epochs, config.output) == ("data.extxyz", "painn", 3, "out")
    assert config.atomic_energies == {"H": -13.6} and config.energy_scale == "auto"
    with pytest.raises(ValueError, match="max_epochs: expected int"):
        parse("--train", "d.xyz", "--max-epochs", "many")


def test_model_section_errors_come_when_the_config_is_read():
    """Before any data file is opened ("train": "x" does not exist): names, families, values."""
    with pytest.raises(ValueError, match="Did you mean 'num_features' for 'num_feature'"):
        load_config(overrides={"train": "x", "model": {"family": "schnet", "hyper": {"num_feature": 8}}})
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        load_config(overrides={"train": "x", "model": {"family": "nope"}})
    config = load_config(overrides={"train": "x", "model": {"family": "schnet", "hyper": {"num_features": 8}}})
    assert build_family_model(config, {"species": [1, 8]}).species == [1, 8]


def test_help_lists_the_families_and_the_defaults(capsys):
    from eqcalc.cli import main
    from eqcalc.models.registry import MODEL_FAMILIES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(family in text for family in MODEL_FAMILIES) and "(default: 'mace'" in text
