"""Predictions of a model on a data set and their errors, overall and per config_type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.dataset import GraphDataset
from ..data.graph import stress_defined
from ..data.labels import Labels, collate
from ..models.base import AtomisticModel
from ..properties import compute_properties_and_responses
from .metrics import ErrorAccumulator


@dataclass
class Prediction:
    """A model's prediction for one structure: energy eV, forces (N, 3) eV/Å, stress (3, 3) eV/Å³ or None;
    for a model with tensor outputs, dipole (3,) e·Å and polarisability (3, 3) Å³ (else None)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    dipole: np.ndarray | None = None
    polarizability: np.ndarray | None = None


def wants_stress(labels: Labels) -> bool:
    return bool(labels.has_stress.any())


def predict(
    model: AtomisticModel, dataset: GraphDataset, *, batch_size: int = 16, device: str | torch.device = "cpu"
) -> list[Prediction]:
    """Per-structure predictions (in dataset order); stress only for batches with stress labels or a cell;
    the model's tensor outputs (dipole of non-periodic structures only)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    predictions = []
    for graph, labels in loader:
        periodic = [stress_defined(cell, pbc) for cell, pbc in zip(graph.cell.numpy(), graph.pbc.numpy())]
        graph = graph.to(device)
        stress = wants_stress(labels) or any(periodic)
        out = compute_properties_and_responses(model, graph, labels.charge.to(device), stress=stress)
        out = {k: v.detach().cpu().numpy() for k, v in out.items()}
        atom_offsets = np.concatenate([[0], np.cumsum(labels.num_atoms.numpy())])
        for k in range(graph.num_graphs):
            atoms = slice(atom_offsets[k], atom_offsets[k + 1])
            predictions.append(Prediction(
                float(out["energy"][k]), out["forces"][atoms], out["stress"][k] if periodic[k] else None,
                dipole=out["dipole"][k] if "dipole" in out and not periodic[k] else None,
                polarizability=out["polarizability"][k] if "polarizability" in out else None,
            ))
    return predictions


def _as_batch(prediction: Prediction) -> dict[str, torch.Tensor]:
    result = {
        "energy": torch.tensor([prediction.energy], dtype=torch.float64),
        "forces": torch.as_tensor(prediction.forces),
    }
    for name in ("stress", "dipole", "polarizability"):
        if getattr(prediction, name) is not None:
            result[name] = torch.as_tensor(getattr(prediction, name))[None]
    return result


def grouped_errors(dataset: GraphDataset, predictions: list[Prediction]) -> dict[str, dict[str, float]]:
    """{"all": summary, config_type: summary, …}: MAE/RMSE per group (see ErrorAccumulator.summary)
    plus "structures", the number of structures in the group."""
    groups: dict[str, ErrorAccumulator] = {"all": ErrorAccumulator()}
    sizes: dict[str, int] = {"all": 0}
    for structure, labels, prediction in zip(dataset.structures, dataset.labels, predictions):
        batch = _as_batch(prediction)
        for name in ("all", structure.config_type):
            groups.setdefault(name, ErrorAccumulator()).update(batch, labels)
            sizes[name] = sizes.get(name, 0) + 1
    if len(groups) == 2:  # a single config_type would repeat "all"
        groups = {"all": groups["all"]}
    return {name: {"structures": sizes[name], **acc.summary()} for name, acc in groups.items()}


TABLE_COLUMNS = [
    ("structures", "N", "{:d}"),
    ("e_mae", "E MAE", "{:.3f}"),
    ("e_rmse", "E RMSE", "{:.3f}"),
    ("e_me", "E ME", "{:+.3f}"),
    ("e_total_mae", "E/str MAE", "{:.2f}"),
    ("e_total_me", "E/str ME", "{:+.2f}"),
    ("f_mae", "F MAE", "{:.2f}"),
    ("f_rmse", "F RMSE", "{:.2f}"),
    ("s_mae", "σ MAE", "{:.4f}"),
    ("s_rmse", "σ RMSE", "{:.4f}"),
]
#: columns shown only where some group has those labels and predictions
RESPONSE_COLUMNS = [
    ("mu_mae", "μ MAE", "{:.2f}"),
    ("mu_rmse", "μ RMSE", "{:.2f}"),
    ("alpha_mae", "α MAE", "{:.4f}"),
    ("alpha_rmse", "α RMSE", "{:.4f}"),
]


def format_error_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Text table of {file: grouped_errors(...)}; E in meV/atom (and meV per structure), F in meV/Å,
    σ in GPa, μ in me·Å, α in Å³ (μ and α only where evaluated); '-' = no labels."""
    summaries = [summary for groups in results.values() for summary in groups.values()]
    columns = TABLE_COLUMNS + [column for column in RESPONSE_COLUMNS
                               if any(not np.isnan(summary[column[0]]) for summary in summaries)]
    rows = [["data / config_type"] + [title for _, title, _ in columns]]
    for file, groups in results.items():
        for group, summary in groups.items():
            name = file if group == "all" else f"  {group}"
            cells = []
            for key, _title, fmt in columns:
                value = summary[key]
                cells.append("-" if isinstance(value, float) and np.isnan(value) else fmt.format(value))
            rows.append([name] + cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("units: E meV/atom (ME: mean signed error, predicted − reference), E/str meV per structure "
                 "(per molecule), F meV/Å (per component), σ GPa (per component)"
                 + (", μ me·Å, α Å³ (per component)" if len(columns) > len(TABLE_COLUMNS) else ""))
    return "\n".join(lines)
