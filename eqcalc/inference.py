"""Models prepared for inference, and predictions for many structures at once.

``inference_model`` is the one place that turns a model (object or file) into the frozen copy
that inference runs: the requested device and dtype, eval mode, no parameter gradients, the CPU
kernels where they can be used, radial tables for them. The ASE calculator and
:func:`predict` both use it, so one structure through the calculator and many through
``predict`` run the same code.
"""

from __future__ import annotations

import copy
import os
from typing import Iterable

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from .data.graph import atoms_to_graph, batch_graphs, stress_defined
from .models.base import AtomisticModel
from .models.io import load_model, resolve_device, resolve_dtype
from .models.setup_lock import MODEL_SETUP_LOCK
from .properties import compute_properties


def inference_model(
    model: AtomisticModel | str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    kernels: bool = True,
) -> tuple[AtomisticModel, bool]:
    """(a frozen inference copy of ``model``, whether it runs eqcalc's CPU kernels).

    A model object is copied (the caller's object is never changed); a path is loaded.
    ``dtype`` None keeps the model's own. Kernels are used only on the CPU and where they build.
    """
    device = resolve_device(device)
    with MODEL_SETUP_LOCK.exclusive():  # copies are fx-traced; tables are made by calling modules
        if isinstance(model, AtomisticModel):
            model = copy.deepcopy(model).to(device=device, dtype=resolve_dtype(dtype) or model.dtype)
        else:
            model = load_model(model, device=device, dtype=dtype)
        model = model.eval().requires_grad_(False)
        kernels_in_use = model.set_kernels(kernels and torch.device(device).type == "cpu")
        model.freeze_weights(True)  # after the kernels: radial tables for the kernel path
    return model, kernels_in_use


def predict(
    model: AtomisticModel | str | os.PathLike,
    structures: Iterable[Atoms],
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    kernels: bool = True,
) -> list[dict[str, np.ndarray | float]]:
    """Energies, forces and stresses of many structures, ``batch_size`` structures per model call.

    Returns one dict per structure, in order, with ASE's names and units: "energy" (float, eV),
    "energies" ((N,) eV per atom), "forces" ((N, 3) eV/Å) and, for structures with a periodic
    direction and a cell of non-zero volume, "stress" ((6,) eV/Å³, Voigt xx yy zz yz xz xy, ASE's
    sign). Equal to the calculator's results to round-off.

    Examples:
        >>> import eqcalc
        >>> from ase.build import bulk, molecule
        >>> model = eqcalc.build_model("schnet", species=["H", "O", "Cu"], cutoff=3.0)
        >>> results = predict(model, [molecule("H2O"), bulk("Cu", cubic=True)], batch_size=2)
        >>> results[0]["forces"].shape, "stress" in results[0], results[1]["stress"].shape
        ((3, 3), False, (6,))
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    model, _ = inference_model(model, device=device, dtype=dtype, kernels=kernels)
    structures = list(structures)
    results: list[dict] = []
    for start in range(0, len(structures), batch_size):
        batch = structures[start:start + batch_size]
        periodic = [stress_defined(atoms.cell.array, atoms.pbc) for atoms in batch]
        graph = batch_graphs([atoms_to_graph(atoms, model.cutoff) for atoms in batch]).to(resolve_device(device))
        out = compute_properties(model, graph, forces=True, stress=any(periodic))
        out = {name: value.detach().cpu().to(torch.float64).numpy() for name, value in out.items()}
        offsets = np.cumsum([0] + [len(atoms) for atoms in batch])
        for k, atoms in enumerate(batch):
            rows = slice(offsets[k], offsets[k + 1])
            result = {"energy": float(out["energy"][k]), "energies": out["energies"][rows], "forces": out["forces"][rows]}
            if periodic[k]:
                result["stress"] = full_3x3_to_voigt_6_stress(out["stress"][k])
            results.append(result)
    return results
