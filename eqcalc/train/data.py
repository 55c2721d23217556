"""Training, validation and test sets from a :class:`TrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols

from ..data.dataset import GraphDataset
from ..data.readers import LabelKeys, read_structures
from ..data.splits import random_split
from ..data.labelled import LabelledStructure
from .config import TrainConfig
from .outliers import check_outliers


@dataclass
class TrainingData:
    """Graphs of the three sets (``test`` may be None, ``valid`` empty), the model's species, and the
    replay frames of a fine-tuning run (None without ``replay_data``)."""

    train: GraphDataset
    valid: GraphDataset
    test: GraphDataset | None
    species: list[int]
    replay: GraphDataset | None = None


def _elements(structures: list[LabelledStructure]) -> set[int]:
    return set(np.unique(np.concatenate([s.numbers for s in structures])).tolist()) if structures else set()


def check_weighted_labels(structures: list[LabelledStructure], config: TrainConfig) -> None:
    """Raise if a loss term has a weight but no training structure has that label."""
    for quantity in ("energy", "forces"):
        weight = getattr(config, f"{quantity}_weight")
        if weight > 0 and all(getattr(s, quantity) is None for s in structures):
            raise ValueError(
                f"No training structure has {quantity} labels but {quantity}_weight is {weight}. Name the label "
                f"with --{quantity}-key, or set --{quantity}-weight 0 to train without it."
            )


def load_training_data(config: TrainConfig) -> TrainingData:
    """Read the files, hold out a seeded validation part when no validation file is given, build graphs."""
    keys = LabelKeys(config.energy_key, config.forces_key, config.stress_key)

    def read(path: str) -> list[LabelledStructure]:
        structures = read_structures(path, keys)
        check_outliers(structures, config.outlier_threshold, path)
        return structures

    train = read(config.train)
    if config.valid is not None:
        valid = read(config.valid)
    else:
        train, valid = random_split(train, fraction=config.valid_fraction, count=config.valid_count, seed=config.seed)
    if config.train_count is not None and config.train_count != len(train):
        if not 0 < config.train_count < len(train):
            raise ValueError(f"train_count: {config.train_count} is not in 1..{len(train)}, the training structures available.")
        _, train = random_split(train, count=config.train_count, seed=config.seed)  # the same seed nests the subsets
    test = read(config.test) if config.test is not None else None
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
    )
