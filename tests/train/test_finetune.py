"""Fine-tuning (init_from): base weights, freezing, re-fitted or kept E0, replay, resume, config errors."""

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from eqcalc import load_model, save_model
from eqcalc.cli import main
from eqcalc.models.registry import MODEL_FAMILIES, build_model
from eqcalc.properties import compute_properties
from eqcalc.train.config import load_config
from eqcalc.train.finetune import FREEZE_GROUPS, resolve_freeze
from eqcalc.train.loss import label_counts
from eqcalc.train.statistics import least_squares_atomic_energies
from eqcalc.train.trainer import Trainer

TINY = {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}}
DATA = Path(__file__).resolve().parents[1] / "data"
SHIFT = 0.5  # eV per atom added to the new data's energies: another reference level


def options(train_file, output, **extra):
    return {
        "train": str(train_file), "valid_count": 4, "batch_size": 4, "output": str(output), "progress": False,
        "seed": 3, "lr": 5e-3, "ema_decay": 0.9, "device": "cpu", "max_epochs": 1, **extra,
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """base.pt trained 1 epoch on frames 0–23; new.extxyz: frames 24–47 with energies shifted by SHIFT eV/atom."""
    root = tmp_path_factory.mktemp("finetune")
    frames = ase.io.read(DATA / "ethanol_small.extxyz", ":48")
    ase.io.write(root / "old.extxyz", frames[:24])
    new = []
    for atoms in frames[24:]:
        energy = atoms.get_potential_energy() + SHIFT * len(atoms)
        forces = atoms.get_forces()
        atoms = atoms.copy()
        atoms.info["energy"], atoms.arrays["forces"] = energy, forces
        new.append(atoms)
    ase.io.write(root / "new.extxyz", new)
    Trainer(load_config(overrides=options(root / "old.extxyz", root / "base_run", model=TINY)), log=lambda _: None).fit()
    return {"root": root, "base": root / "base_run" / "best_model.pt", "old": root / "old.extxyz", "new": root / "new.extxyz"}


def finetune_config(files, output, **extra):
    return load_config(overrides=options(files["new"], output, init_from=str(files["base"]), **extra))


def quiet(config):
    return Trainer(config, log=lambda _: None)


def test_fine_tuning_starts_from_the_base_weights(files, tmp_path):
    trainer = quiet(finetune_config(files, tmp_path / "ft", atomic_energies="keep"))
    base = load_model(files["base"])
    for name, value in base.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    fresh = quiet(load_config(overrides=options(files["new"], tmp_path / "fresh", model=TINY)))
    assert not torch.equal(fresh.model.state_dict()["embedding.weight"], base.state_dict()["embedding.weight"])
    graph, labels = next(iter(trainer.train_loader))
    first_loss = trainer.compute_gradients(graph, labels)
    predicted = compute_properties(base, graph, forces=True, training=True)
    expected = trainer.loss_fn(predicted, labels, label_counts(labels))
    torch.testing.assert_close(first_loss, expected.detach(), rtol=1e-12, atol=0)
    assert trainer.config.model.family == "schnet" and trainer.config.model.cutoff == 3.0


def test_frozen_parameters_stay_bit_for_bit_while_the_others_train(files, tmp_path):
    output = tmp_path / "ft"
    quiet(finetune_config(files, output, freeze=["embedding", "interactions"], max_epochs=2)).fit()
    base = load_model(files["base"]).state_dict()
    raw = torch.load(output / "checkpoint.pt", weights_only=True)["model"]["state_dict"]
    best = torch.load(output / "best_model.pt", weights_only=True)["state_dict"]
    for weights in (raw, best):
        for name in ("embedding.weight", "interactions.0.filter.0.weight", "interactions.0.project_out.2.bias"):
            assert torch.equal(weights[name], base[name]), name
        assert not torch.equal(weights["readout.0.weight"], base["readout.0.weight"])


def test_reference_energies_are_refitted_by_default_and_kept_on_request(files, tmp_path):
    base = load_model(files["base"])
    refitted = quiet(finetune_config(files, tmp_path / "a")).model
    kept = quiet(finetune_config(files, tmp_path / "b", atomic_energies="keep")).model
    assert torch.equal(kept.element_energies.values, base.element_energies.values)
    train = quiet(finetune_config(files, tmp_path / "c")).data.train.structures
    e0, _ = least_squares_atomic_energies(train, [1, 6, 8])
    np.testing.assert_allclose(refitted.element_energies.values.numpy(), e0, rtol=1e-12)
    # C2H6O: the energy of the composition moved by the 9-atom shift of the new data's reference
    composition = np.array([6.0, 2.0, 1.0])
    old_total = composition @ base.element_energies.values.numpy()
    assert composition @ e0 - old_total == pytest.approx(9 * SHIFT, abs=0.5)
    assert float(refitted.energy_scale) == float(base.energy_scale)
    assert refitted.avg_num_neighbors == base.avg_num_neighbors


def test_elements_the_base_model_lacks_are_named(files, tmp_path, silicon_file):
    config = load_config(overrides=options(silicon_file, tmp_path / "si", init_from=str(files["base"]), valid_count=2))
    with pytest.raises(ValueError, match=r"contain \['Si'\], which the base model .* \(elements \['H', 'C', 'O'\]\) lacks"):
        quiet(config)


def test_replay_mixes_the_fraction_of_old_frames_into_each_epoch(files, tmp_path):
    trainer = quiet(finetune_config(files, tmp_path / "ft", replay_data=str(files["old"]), replay_fraction=0.25))
    num_train = len(trainer.data.train)  # 20
    draws = []
    for epoch in range(3):
        trainer.train_sampler.set_epoch(epoch)
        indices = list(trainer.train_sampler)
        replay = sorted(i for i in indices if i >= num_train)
        assert len(replay) == 5 and len(set(replay)) == 5
        assert sorted(i for i in indices if i < num_train) == list(range(num_train))
        draws.append(replay)
    assert draws[0] != draws[1] or draws[1] != draws[2]
    trainer.train_sampler.set_epoch(0)
    assert sum(len(labels.energy) for _, labels in trainer.train_loader) == num_train + 5


def test_resume_of_a_fine_tuning_run_continues_exactly(files, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    extra = {"freeze": ["embedding"], "replay_data": str(files["old"])}
    quiet(finetune_config(files, straight, max_epochs=2, **extra)).fit()
    quiet(finetune_config(files, split, max_epochs=1, **extra)).fit()
    quiet(finetune_config(files, split, max_epochs=2, resume=True, **extra)).fit()
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]["state_dict"]
    b = torch.load(split / "checkpoint.pt", weights_only=True)["model"]["state_dict"]
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=1e-12, atol=1e-14)


def test_a_contradicting_model_section_is_an_error_naming_the_keys(files, tmp_path):
    with pytest.raises(ValueError, match=r"model.cutoff: 4.0 \(file: 3.0\); model.hyper.num_features: 16 \(file: 8\)"):
        finetune_config(files, tmp_path / "x", model={"cutoff": 4.0, "hyper": {"num_features": 16}})
    agreeing = finetune_config(files, tmp_path / "x", model={"family": "schnet", "hyper": {"num_features": 8}})
    assert agreeing.model.hyper["num_interactions"] == 1


def test_config_errors_come_before_any_data_is_read(files, tmp_path):
    missing = tmp_path / "no-such-data.extxyz"
    with pytest.raises(ValueError, match="freeze: 'embeding' is neither .* Did you mean 'embedding'"):
        load_config(overrides=options(missing, tmp_path / "x", init_from=str(files["base"]), freeze=["embeding"]))
    with pytest.raises(ValueError, match="atomic_energies: 'keep' needs a base model; set init_from"):
        load_config(overrides=options(missing, tmp_path / "x", atomic_energies="keep"))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(overrides=options(missing, tmp_path / "x", init_from=str(tmp_path / "none.pt")))


def test_dtype_follows_the_file_unless_given(files, tmp_path):
    single = tmp_path / "base32.pt"
    save_model(load_model(files["base"], dtype="float32"), single)
    assert load_config(overrides=options(files["new"], tmp_path / "x", init_from=str(single))).dtype == "float32"
    given = load_config(overrides=options(files["new"], tmp_path / "x", init_from=str(single), dtype="float64"))
    assert given.dtype == "float64"


def test_command_line_fine_tuning(files, tmp_path):
    output = tmp_path / "cli"
    main(["train", "--train", str(files["new"]), "--init-from", str(files["base"]), "--freeze", "[readout]",
          "--max-epochs", "1", "--valid-count", "4", "--output", str(output), "--no-progress", "--device", "cpu"])
    weights = torch.load(output / "best_model.pt", weights_only=True)["state_dict"]
    assert torch.equal(weights["readout.2.weight"], load_model(files["base"]).state_dict()["readout.2.weight"])


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_freeze_groups_partition_every_family(family):
    names = [name for name, _ in build_model(family, species=[1, 8], cutoff=3.0).named_parameters()]
    covered = []
    for group in FREEZE_GROUPS[family]:
        prefixes = resolve_freeze(family, [group], names)
        matched = [n for n in names if any(n.startswith(p + ".") for p in prefixes)]
        assert matched, group
        covered += matched
    assert sorted(covered) == sorted(names)
