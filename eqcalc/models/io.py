"""Model files: a plain config plus tensors, loadable without running code.

A model file is a ``torch.save`` of a dict holding only strings, numbers, lists
and tensors, so ``torch.load(path, weights_only=True)`` reads it safely:

    {"format": "eqcalc-model", "format_version": 1, "eqcalc_version": str,
     "family": str, "dtype": "float32" | "float64", "config": dict,
     "state_dict": {name: tensor}}
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..atomic_io import atomic_path
from .base import AtomisticModel
from .registry import MODEL_FAMILIES, build_model

FORMAT = "eqcalc-model"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ModelFileError(ValueError):
    """A model file is missing, corrupt, foreign, or would need code to load."""


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """"float32" / "float64" / torch dtype / None -> torch dtype or None."""
    if dtype is None or dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"Unsupported dtype {dtype!r}; use 'float32' or 'float64' (or None for the model's own).")


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically (see :func:`eqcalc.atomic_io.atomic_path`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def model_payload(model: AtomisticModel) -> dict:
    """The plain dict that :func:`save_model` writes."""
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "eqcalc_version": __version__,
        "family": model.family,
        "dtype": dtype_name(model.dtype),
        "config": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(model: AtomisticModel, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (weights + plain config, no pickled objects)."""
    atomic_torch_save(model_payload(model), path)


def load_weights_only(path: Path, error: type[Exception], kind: str, fix: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU: never runs code from the file.

    Failures raise ``error`` naming the file's ``kind`` ("model", "checkpoint") and ``fix``.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(
            f"{str(path)!r} needs pickled Python objects to load (for example a whole module saved with "
            f"torch.save(model)); eqcalc never runs code from a {kind} file. {fix}"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise error(f"{str(path)!r} is not a readable {kind} file (truncated or corrupt?): {err}. {fix}") from err


def read_model_file(path: str | os.PathLike) -> dict:
    """Load and validate a model file's dict without building the model."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {str(path)!r} does not exist. Check the path, or train one with `eqcalc train`.")
    payload = load_weights_only(
        path, ModelFileError, "model", "Use an intact copy, or re-save the model with eqcalc.save_model(model, path)."
    )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(
            f"{str(path)!r} is a PyTorch file but not an eqcalc model (no 'format': '{FORMAT}' entry). "
            "Models from other codes need converting; eqcalc models are written by eqcalc.save_model."
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} has model format version {payload['format_version']}, newer than this eqcalc "
            f"understands ({FORMAT_VERSION}). Upgrade eqcalc."
        )
    if payload.get("family") not in MODEL_FAMILIES:
        raise ModelFileError(
            f"{str(path)!r} holds a model of unknown family {payload.get('family')!r}; "
            f"this eqcalc knows {sorted(MODEL_FAMILIES)}."
        )
    return payload


def model_from_payload(payload: dict, source: str = "the model") -> AtomisticModel:
    """Build the model a payload (see :func:`model_payload`) describes, in its stored dtype, on the CPU."""
    model = build_model(payload["family"], **payload["config"]).to(DTYPES[payload["dtype"]])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ModelFileError(
            f"{source}: the weights do not match the stored config ({err}). The file is corrupt "
            "or was edited by hand."
        ) from err
    return model


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> AtomisticModel:
    """Load a model file written by :func:`save_model`, on ``device`` in ``dtype``
    (None keeps the dtype it was saved in)."""
    model = model_from_payload(read_model_file(path), source=str(path))
    target = resolve_dtype(dtype) or model.dtype
    return model.to(device=device, dtype=target).eval()
