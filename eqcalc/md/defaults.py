"""The bundled model and molecule that ``eqcalc md`` uses when given none."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = "default_model.pt"
DEFAULT_STRUCTURE = "default_structure.xyz"


def bundled_asset(name: str) -> Path:
    """Path of ``eqcalc/assets/<name>``; FileNotFoundError with a way out when it is not shipped."""
    path = Path(str(files("eqcalc").joinpath("assets", name)))
    if not path.is_file():
        raise FileNotFoundError(
            f"The bundled file eqcalc/assets/{name} is missing from this installation (the default model is "
            "produced by the training pipeline). Pass --model MODEL.pt and --structure FILE explicitly, or "
            "reinstall eqcalc from a release that ships it."
        )
    return path
