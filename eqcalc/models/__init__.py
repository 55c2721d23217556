"""Model families behind one interface, plus safe serialisation."""

from . import schnet  # noqa: F401  (registers the family)
from . import egnn, painn  # noqa: F401
from . import allegro, mace, nequip  # noqa: F401
from .base import AtomisticModel
from .io import ModelFileError, load_model, save_model
from .registry import MODEL_FAMILIES, build_model, register_family

__all__ = [
    "MODEL_FAMILIES",
    "AtomisticModel",
    "ModelFileError",
    "build_model",
    "load_model",
    "register_family",
    "save_model",
]
