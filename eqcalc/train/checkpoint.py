"""Training checkpoints: everything needed to continue a run exactly, as plain data + tensors.

    {"format": "eqcalc-checkpoint", "format_version": 1, "epoch": completed epochs,
     "model": model file payload (raw, not averaged, weights), "optimizer": state dict,
     "schedule": dict, "ema": dict | None, "rng": dict of tensors/ints, "best_valid_loss": float,
     "epochs_without_improvement": int, "config": dict}

Loadable with ``torch.load(path, weights_only=True)``; written atomically.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from ..models.io import atomic_torch_save, load_weights_only

FORMAT = "eqcalc-checkpoint"
FORMAT_VERSION = 1


def capture_rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) random states as tensors and plain numbers."""
    _, python_state, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_position": int(position),
        "numpy_has_gauss": int(has_gauss),
        "numpy_cached_gaussian": float(cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), state["python_gauss"]))
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_position"],
         state["numpy_has_gauss"], state["numpy_cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> None:
    """Write ``checkpoint`` (see the module docstring) atomically."""
    atomic_torch_save({"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {str(path)!r} to resume from; start without --resume.")
    checkpoint = load_weights_only(
        path, ValueError, "checkpoint", "Resume from an intact checkpoint.pt, or start without --resume."
    )
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not an eqcalc training checkpoint (a model file or another code's checkpoint?). "
            "--resume needs the checkpoint.pt that eqcalc train wrote in its output folder."
        )
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written by a newer eqcalc; upgrade to resume it.")
    return checkpoint
