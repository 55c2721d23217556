"""Training, validation and test sets from a :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from ..data.dataset import GraphDataset
from ..data.readers import LabelKeys, read_structures
from ..data.splits import random_split_indices
from ..data.labelled import LabelledStructure
from .config import TrainConfig
from .outliers import check_outliers


@dataclass
class TrainingData:
    """Graphs of the three sets (``test`` may be None, ``valid`` empty), the model's species, the
    replay frames of a fine-tuning run (None without ``replay_data``), and which frames of which
    file each set holds."""

    train: GraphDataset
    valid: GraphDataset
    test: GraphDataset | None
    species: list[int]
    replay: GraphDataset | None = None
    splits: dict = field(default_factory=dict)  # set → {"file": path, "frames": 0-based indices}


def _elements(structures: list[LabelledStructure]) -> set[int]:
    return set(np.unique(np.concatenate([s.numbers for s in structures])).tolist()) if structures else set()


def check_weighted_labels(structures: list[LabelledStructure], config: TrainConfig) -> None:
    """Raise if a loss term has a weight but no training structure has that label."""
    for quantity in ("energy", "forces"):
        weight = getattr(config, f"{quantity}_weight")
        if weight != "auto" and weight > 0 and all(getattr(s, quantity) is None for s in structures):
            raise ValueError(
                f"No training structure has {quantity} labels but {quantity}_weight is {weight}. Name the label "
                f"with --{quantity}-key, or set --{quantity}-weight 0 to train without it."
            )
    for quantity in config.model.outputs:
        if all(getattr(s, quantity) is None for s in structures):
            raise ValueError(
                f"model.outputs has {quantity}, but no training structure has a {quantity} label. Name it with "
                f"{quantity}_key (--{quantity}-key), or remove {quantity} from model.outputs."
            )


def load_training_data(config: TrainConfig) -> TrainingData:
    """Read the files, hold out a seeded validation part when no validation file is given, build graphs."""
    keys = LabelKeys(config.energy_key, config.forces_key, config.stress_key, config.dipole_key, config.polarizability_key)

    def read(path: str) -> list[LabelledStructure]:
        structures = read_structures(path, keys)
        check_outliers(structures, config.outlier_threshold, path)
        return structures

    frames = read(config.train)
    train_rows = list(range(len(frames)))
    if config.valid is not None:
        valid = read(config.valid)
        splits = {"valid": {"file": config.valid, "frames": list(range(len(valid)))}}
    else:
        train_rows, valid_rows = random_split_indices(
            len(frames), fraction=config.valid_fraction, count=config.valid_count, seed=config.seed
        )
        valid = [frames[i] for i in valid_rows]
        splits = {"valid": {"file": config.train, "frames": valid_rows}}
    if config.train_count is not None and config.train_count != len(train_rows):
        if not 0 < config.train_count < len(train_rows):
            raise ValueError(f"train_count: {config.train_count} is not in 1..{len(train_rows)}, the training structures available.")
        _, chosen = random_split_indices(len(train_rows), count=config.train_count, seed=config.seed)  # nested subsets
        train_rows = [train_rows[k] for k in chosen]
    train = [frames[i] for i in train_rows]
    splits = {"train": {"file": config.train, "frames": train_rows}, **splits}
    test = read(config.test) if config.test is not None else None
    if test is not None:
        splits["test"] = {"file": config.test, "frames": list(range(len(test)))}
    check_weighted_labels(train, config)
    species = sorted(_elements(train))
    for name, structures in (("validation", valid), ("test", test or [])):
        extra = sorted(_elements(structures) - set(species))
        if extra:
            raise ValueError(
                f"The {name} data contain {[chemical_symbols[z] for z in extra]}, which the training data lack; "
                "the model could not learn them. Add such structures to the training set."
            )
    cutoff = config.model.cutoff
    replay = read(config.replay_data) if config.replay_data is not None else None
    return TrainingData(
        train=GraphDataset(train, cutoff, f"training data ({config.train})"),
        valid=GraphDataset(valid, cutoff, f"validation data ({config.valid or config.train})"),
        test=GraphDataset(test, cutoff, f"test data ({config.test})") if test is not None else None,
        species=species,
        replay=GraphDataset(replay, cutoff, f"replay data ({config.replay_data})") if replay is not None else None,
        splits=splits,
    )


def bootstrap_resample(data: TrainingData, seed: int) -> TrainingData:
    """``data`` with its training set replaced by a resample with replacement of as many structures,
    drawn with ``numpy.random.default_rng(seed)`` (a committee member's bootstrap). Its splits' train
    entry lists the drawn frames of the training file (repeats included, in draw order) and the
    ``bootstrap_seed``; the species stay those of the whole training set, so every member of a
    committee knows the same elements."""
    rows = np.random.default_rng(seed).integers(len(data.train), size=len(data.train)).tolist()
    frames = data.splits["train"]["frames"]
    train = GraphDataset([data.train.structures[i] for i in rows], data.train.cutoff, "bootstrap resample of the training data")
    splits = {**data.splits, "train": {**data.splits["train"], "frames": [frames[i] for i in rows], "bootstrap_seed": seed}}
    return dataclasses.replace(data, train=train, splits=splits)
