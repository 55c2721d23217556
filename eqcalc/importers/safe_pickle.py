"""Read a pickled torch module (e.g. a mace-torch ``.model`` file) without running its code.

``load_inert(path)`` calls ``torch.load`` with a pickle module whose ``find_class`` admits only
torch's tensor/storage rebuild functions, torch dtypes/sizes and plain containers. Every other
global (``mace.*``, ``e3nn.*``, ``torch.nn.*``, ``os.system``, ...) becomes an :class:`Inert`
record: calling it, instantiating it or setting its state only stores the arguments, so no code
from the file runs. Importers then read hyper-parameters and tensors from the records.
"""

from __future__ import annotations

import collections
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch

_TORCH_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
}
_PLAIN = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class Inert:
    """The inert stand-in for one non-allowed global ``qualname``.

    ``args``: the positional arguments it was called/constructed with (tuple);
    ``state``: what the pickle's BUILD step gave it (usually a module's ``__dict__``), else None.
    """

    qualname = "?"

    def __new__(cls, *args, **kwargs):  # pickle's NEWOBJ calls __new__ alone, REDUCE the class
        record = super().__new__(cls)
        record.args, record.kwargs, record.state = args, kwargs, None
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _inert_global(module: str, name: str) -> type:
    """A fresh Inert subclass standing for ``module.name`` (so NEWOBJ, REDUCE and BUILD are inert)."""
    return type(name, (Inert,), {"qualname": f"{module}.{name}", "__module__": __name__})


def _reconstructor(cls, base, state):
    """copyreg._reconstructor for Inert classes only (protocol-0/1 object pickles)."""
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls(state)
    raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} refused")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) in _TORCH_ALLOWED:
            return super().find_class(module, name)
        if (module, name) in _PLAIN:
            return _PLAIN[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "copyreg" and name == "_reconstructor":
            return _reconstructor
        return _inert_global(module, name)


safe_pickle_module = types.SimpleNamespace(Unpickler=_Unpickler, load=lambda f, **kw: _Unpickler(f, **kw).load(),
                                          __name__="eqcalc_inert_pickle")


def load_inert(path: str | Path) -> Any:
    """Unpickle a ``torch.save`` file with every non-tensor global made :class:`Inert`.

    Raises ValueError (one line, naming the file) when the file is not a torch pickle.
    """
    if _is_torchscript(path):
        raise ValueError(f"{path}: a TorchScript (compiled) model, which needs its code to load; pass the .model "
                         "file mace-torch saved with torch.save (not the -compiled or -lammps one).")
    try:
        # weights_only=True cannot take a pickle module; the restriction is _Unpickler.find_class, which
        # admits only tensor rebuilds, dtypes and plain containers and makes every other global inert
        return torch.load(path, map_location="cpu", pickle_module=safe_pickle_module, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # any unreadable file is the same user error: not a model pickle
        raise ValueError(f"{path}: not a readable torch model file ({type(err).__name__}: {err}); "
                         "pass the .model file mace-torch saved.") from None


def _is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (torch.load would hand it to torch.jit.load)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def record_name(obj: Any) -> str | None:
    """The qualified global name an Inert record (or a bare global, e.g. a function the file
    refers to) stands for, or None for anything else."""
    if isinstance(obj, Inert) or (isinstance(obj, type) and issubclass(obj, Inert)):
        return obj.qualname
    return None
