"""Model families by name: ``build_model("schnet", species=[1, 6, 8], cutoff=5.0)``."""

from __future__ import annotations

from typing import Any, Callable

from .base import AtomisticModel
from .setup_lock import MODEL_SETUP_LOCK

MODEL_FAMILIES: dict[str, type[AtomisticModel]] = {}


def register_family(name: str) -> Callable[[type[AtomisticModel]], type[AtomisticModel]]:
    """Class decorator adding a family to :data:`MODEL_FAMILIES` under ``name``."""

    def register(cls: type[AtomisticModel]) -> type[AtomisticModel]:
        if name in MODEL_FAMILIES:
            raise ValueError(f"Model family {name!r} is already registered.")
        cls.family = name
        MODEL_FAMILIES[name] = cls
        return cls

    return register


def build_model(family: str, **config: Any) -> AtomisticModel:
    """Build a model of ``family`` with its constructor arguments (``species``, ``cutoff``, …) and,
    with ``outputs=["dipole", "polarizability"]`` (either or both), heads for those tensor outputs
    (:meth:`AtomisticModel.add_outputs`)."""
    try:
        cls = MODEL_FAMILIES[family]
    except KeyError:
        raise ValueError(f"Unknown model family {family!r}; available: {sorted(MODEL_FAMILIES)}.") from None
    if "species" not in config:
        raise ValueError("build_model needs species=[atomic numbers the model must know].")
    outputs = config.pop("outputs", ())
    with MODEL_SETUP_LOCK.exclusive():  # e3nn modules are fx-traced as they are built
        model = cls(**config)
    if outputs:
        model.add_outputs(outputs)
    return model
