"""Error statistics (MAE, RMSE) accumulated over batches, in the units people report.

Energy per atom in meV/atom, energy per structure in meV, force components in meV/Å,
stress components in GPa, dipole components in me·Å (milli-e·Å), polarisability components in Å³.
"""

from __future__ import annotations

import math

import torch
from ase.units import GPa

from ..data.labels import Labels
from .loss import masked_errors

# quantity: (factor from eV, eV/Å, eV/Å³ to the report unit, report unit)
QUANTITIES = {
    "e": (1000.0, "meV/atom"),
    "e_total": (1000.0, "meV"),
    "f": (1000.0, "meV/Å"),
    "s": (1.0 / GPa, "GPa"),
    "mu": (1000.0, "me·Å"),
    "alpha": (1.0, "Å³"),
}


class ErrorAccumulator:
    """Sums of |error|, error², counts and signed errors per quantity; combine processes with
    :meth:`as_tensor`."""

    def __init__(self):
        self.sums = torch.zeros(len(QUANTITIES), 4, dtype=torch.float64)

    def update(self, predicted: dict[str, torch.Tensor], labels: Labels) -> None:
        errors = masked_errors({k: v.detach() for k, v in predicted.items()}, labels)
        errors["e_total"] = (predicted["energy"].detach() - labels.energy)[labels.has_energy]
        by_key = {"e": errors["energy"], "e_total": errors["e_total"], "f": errors.get("forces"), "s": errors.get("stress"),
                  "mu": errors.get("dipole"), "alpha": errors.get("polarizability")}
        for row, key in enumerate(QUANTITIES):
            values = by_key[key]
            if values is not None and values.numel():
                values = values.to(torch.float64).cpu()
                self.sums[row] += torch.stack(
                    [values.abs().sum(), values.square().sum(), torch.tensor(float(values.numel())), values.sum()]
                )

    def as_tensor(self) -> torch.Tensor:
        return self.sums

    def merge_tensor(self, sums: torch.Tensor) -> None:
        """Replace the sums (e.g. by their all-reduced total over processes)."""
        self.sums = sums.to(torch.float64).cpu().clone()

    def summary(self) -> dict[str, float]:
        """{"e_mae": …, "e_rmse": …, "e_me": …, "f_mae": …, …} in report units (``_me``: mean signed
        error, predicted − reference: a constant offset shows here); NaN where there were no labels."""
        out = {}
        for row, (key, (factor, _unit)) in enumerate(QUANTITIES.items()):
            abs_sum, sq_sum, count, signed_sum = self.sums[row].tolist()
            out[f"{key}_mae"] = factor * abs_sum / count if count else math.nan
            out[f"{key}_rmse"] = factor * math.sqrt(sq_sum / count) if count else math.nan
            out[f"{key}_me"] = factor * signed_sum / count if count else math.nan
        return out


def units(key: str) -> str:
    """Unit label of a summary key such as "f_mae"."""
    return QUANTITIES[key.rsplit("_", 1)[0]][1]
