"""Model files: a plain config plus tensors, loadable without running code.

A model file is a ``torch.save`` of a dict holding only strings, numbers, lists
and tensors, so ``torch.load(path, weights_only=True)`` reads it safely:

    {"format": "eqcalc-model", "format_version": 1, "eqcalc_version": str,
     "family": str, "dtype": "float32" | "float64", "config": dict,
     "state_dict": {name: tensor}, "checksum": str}

``checksum`` (SHA-256 of the tensors' names, dtypes, shapes and bytes; files written before it
existed have none) is checked at load, and so are the tensors' dtypes and shapes against the
family's own: a bit flip in the weights or a tensor of the wrong kind is an error, not a changed
energy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..atomic_io import atomic_path
from .allocation import AllocationLimit
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


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that this torch can use: ValueError naming the device and the fix otherwise
    (a CUDA device with a CPU-only torch or no GPU visible; an unknown name)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r} ({err}); use 'cpu', 'cuda' or 'cuda:N'.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"device {str(device)!r} was asked for, but {why}; use device='cpu'.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} GPU(s) visible.")
    return device


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically (see :func:`eqcalc.atomic_io.atomic_path`)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as err:  # torch's zip writer reports a failed write as a RuntimeError
        stats = os.statvfs(Path(path).parent)
        free = stats.f_bavail * stats.f_frsize
        full = free < 2 * _tensor_bytes(obj) + (1 << 20)
        raise OSError(
            errno.ENOSPC if full else errno.EIO,
            f"writing {str(path)!r} failed{' because the disk is full' if full else ''} "
            f"({str(err).splitlines()[0]}); the previous version of the file, if any, is intact",
        ) from None


def _tensor_bytes(obj: object) -> int:
    """Bytes of the tensors in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def tensors_checksum(state_dict: dict) -> str:
    """SHA-256 (hex) of a state_dict's names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_payload(model: AtomisticModel) -> dict:
    """The plain dict that :func:`save_model` writes."""
    from .. import __version__

    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "eqcalc_version": __version__,
        "family": model.family,
        "dtype": dtype_name(model.dtype),
        "config": model.config(),
        "state_dict": state_dict,
        "checksum": tensors_checksum(state_dict),
    }
    if getattr(model, "uncertainty", None) is not None:  # a fitted one-model uncertainty (eqcalc.llpr)
        payload["uncertainty"] = model.uncertainty.to_dict()
    return payload


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
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a directory, not a model file. Give the path of a .pt file in it.")
    if not path.is_file():
        raise ModelFileError(f"Model file {str(path)!r} does not exist. Check the path, or train one with `eqcalc train`.")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not (head == b"PK" or head[:1] == b"\x80"):  # torch.save: a zip archive, or a bare pickle (old format)
        raise ModelFileError(
            f"{str(path)!r} is not a PyTorch file (neither a zip archive nor a pickle: text, another "
            "format or random bytes). eqcalc models are written by eqcalc.save_model / eqcalc train."
        )
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
    problems = [
        f"{key!r} {what}" for key, ok, what in (
            ("dtype", payload.get("dtype") in DTYPES, f"must be one of {sorted(DTYPES)}, got {payload.get('dtype')!r}"),
            ("config", isinstance(payload.get("config"), dict), "is missing or not a mapping"),
            ("state_dict", isinstance(payload.get("state_dict"), dict)
             and all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()),
             "is missing or not a mapping of names to tensors"),
        ) if not ok
    ]
    if problems:
        raise ModelFileError(f"{str(path)!r}: {'; '.join(problems)}. {DAMAGED}")
    if "checksum" in payload and payload["checksum"] != tensors_checksum(payload["state_dict"]):
        raise ModelFileError(
            f"{str(path)!r}: its tensors do not match the checksum stored with them (the file was damaged "
            f"or edited after it was written). {DAMAGED}"
        )
    return payload


DAMAGED = "The file is damaged or was edited by hand: use an intact copy, or re-save the model with eqcalc.save_model."


def model_from_payload(payload: dict, source: str = "the model") -> AtomisticModel:
    """Build the model a payload (see :func:`model_payload`) describes, in its stored dtype, on the
    CPU. Its tensors must have the names, shapes and kinds (floating point or integer) of the
    family's own. While the model is built, no single tensor may be much larger than the largest
    stored one (:data:`ALLOCATION_SLACK`), so a config asking for far more than the file holds is
    refused before it allocates."""
    family, config = payload["family"], payload["config"]
    stored = payload["state_dict"]
    largest = max((tensor.numel() for tensor in stored.values()), default=0)
    try:
        with AllocationLimit(max(ALLOCATION_SLACK * largest, MIN_ALLOCATION_LIMIT)):
            model = build_model(family, **config).to(DTYPES[payload["dtype"]])
    except (ValueError, TypeError, RuntimeError) as err:
        raise ModelFileError(f"{source}: its config does not build a {family!r} model ({err}). {DAMAGED}") from err
    _check_tensors(model.state_dict(), stored, source)
    model.load_state_dict(stored)
    if payload.get("uncertainty") is not None:
        from ..llpr import LastLayerUncertainty, last_layer_width

        try:
            model.uncertainty = LastLayerUncertainty.from_dict(payload["uncertainty"], last_layer_width(model), source)
        except ValueError as err:
            raise ModelFileError(str(err)) from err
    return model


#: while a model is built from a file, a tensor may have this many times the elements of the
#: file's largest tensor (temporaries, tables), and at least MIN_ALLOCATION_LIMIT
ALLOCATION_SLACK = 16
MIN_ALLOCATION_LIMIT = 1 << 24


def _check_tensors(expected: dict, stored: dict, source: str) -> None:
    """ModelFileError unless ``stored`` has ``expected``'s names, shapes and kinds of dtype."""
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    wrong = [
        f"{name}: {tuple(stored[name].shape)} {stored[name].dtype}, expected {tuple(tensor.shape)} {tensor.dtype}"
        for name, tensor in expected.items() if name in stored and (
            stored[name].shape != tensor.shape or stored[name].dtype.is_floating_point != tensor.dtype.is_floating_point
        )
    ]
    if missing or unexpected or wrong:
        details = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                   "; ".join(wrong[:3])]
        raise ModelFileError(
            f"{source}: the weights do not match the stored config ({'; '.join(d for d in details if d)}). {DAMAGED}"
        )


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> AtomisticModel:
    """Load a model file written by :func:`save_model`, on ``device`` in ``dtype``
    (None keeps the dtype it was saved in)."""
    device = resolve_device(device)
    model = model_from_payload(read_model_file(path), source=str(path))
    target = resolve_dtype(dtype) or model.dtype
    return model.to(device=device, dtype=target).eval()
