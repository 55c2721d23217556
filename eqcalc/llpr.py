"""Uncertainty from one model: last-layer prediction rigidity (LLPR).

Every family's per-atom energy is a linear map of its last-layer features, the inputs of its
final linear readout layers (:meth:`AtomisticModel.readout_layers`; scalar channels only):
E_i = wᵀ (f_i − f_ref(s_i)) + e(s_i), with f_ref the features of an isolated atom of the same
element. Following Bigi, Chong, Ceriotti and Grasselli (Mach. Learn.: Sci. Technol. 5, 045018,
2024), the uncertainty of a prediction is how weakly the training data constrain the readout
weights along its features. Here the data are the training atoms:

    f̃_i = (f_i − f_ref(s_i)) / d                    (d: the features' RMS over the training atoms)
    C = Σ_train atoms f̃ f̃ᵀ + ς² I
    forces_std_i = α_F √(f̃_iᵀ C⁻¹ f̃_i)              (eV/Å, per atom)
    energy_std  = α_E √(f̃_Aᵀ C⁻¹ f̃_A),  f̃_A = Σ_{i∈A} f̃_i   (eV)

ς² and the scales α are fitted on validation structures by the Gaussian negative log-likelihood of
the observed errors (each force component's variance forces_std_i² / 3, as a committee's
``forces_std`` is the root of the trace of its force covariance). The cost at inference is one
F × F quadratic form per atom on features the model computes anyway. Fitted with
:func:`fit_llpr`, saved in the model file (:func:`eqcalc.save_model`) and used by the calculator,
which then returns ``forces_std`` and ``energy_std`` like a committee's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from ase import Atoms
from e3nn import o3

from .data.graph import atoms_to_graph, batch_graphs
from .models.base import AtomisticModel
from .properties import compute_properties

METHOD = "llpr"
REGULARIZERS = tuple(10.0 ** k for k in range(-8, 3))  # ς² tried, relative to the mean diagonal of Σ f̃f̃ᵀ


@dataclass(frozen=True)
class LastLayerUncertainty:
    """A fitted LLPR (module docstring): float64 CPU tensors and floats, saved in model files.

    Attributes:
        inverse_covariance: (F, F) C⁻¹.
        feature_scale: (F,) d, the features' RMS over the training atoms.
        force_scale: α_F.
        energy_scale: α_E (None: fitted without validation energies; no ``energy_std``).
        regularizer: ς², absolute.
    """

    inverse_covariance: torch.Tensor
    feature_scale: torch.Tensor
    force_scale: float
    energy_scale: float | None
    regularizer: float

    def to_dict(self) -> dict:
        """Plain values for a model file's "uncertainty" entry."""
        return {"method": METHOD, "inverse_covariance": self.inverse_covariance, "feature_scale": self.feature_scale,
                "force_scale": self.force_scale, "energy_scale": self.energy_scale, "regularizer": self.regularizer}

    @classmethod
    def from_dict(cls, values: dict, num_features: int, source: str) -> LastLayerUncertainty:
        """The uncertainty a model file's "uncertainty" entry describes; ValueError naming what is wrong."""
        if not isinstance(values, dict) or values.get("method") != METHOD:
            raise ValueError(f"{source}: its 'uncertainty' entry is not an {METHOD} fit; re-fit it with eqcalc calibrate.")
        inverse, scale = values.get("inverse_covariance"), values.get("feature_scale")
        shapes_ok = (isinstance(inverse, torch.Tensor) and tuple(inverse.shape) == (num_features, num_features)
                     and isinstance(scale, torch.Tensor) and tuple(scale.shape) == (num_features,))
        scalars = [values.get("force_scale"), values.get("regularizer")] + (
            [] if values.get("energy_scale") is None else [values["energy_scale"]])
        if not shapes_ok or not all(isinstance(x, (int, float)) and np.isfinite(x) and x > 0 for x in scalars):
            raise ValueError(
                f"{source}: its 'uncertainty' entry does not fit the model ({num_features} last-layer features) or has "
                "non-positive scales; re-fit it with eqcalc calibrate."
            )
        return cls(inverse.to(torch.float64), scale.to(torch.float64), float(values["force_scale"]),
                   None if values.get("energy_scale") is None else float(values["energy_scale"]),
                   float(values["regularizer"]))

    def rigidity_terms(self, features: torch.Tensor) -> torch.Tensor:
        """(n,) f̃ᵀ C⁻¹ f̃ for (n, F) raw reference-subtracted features (rows: atoms or structures)."""
        scaled = features.to(torch.float64) / self.feature_scale
        return torch.einsum("nf,fg,ng->n", scaled, self.inverse_covariance, scaled).clamp_min(0.0)

    def results(self, features: torch.Tensor) -> dict:
        """"forces_std" (N,) eV/Å and, where fitted, "energy_std" (eV) of one structure from its
        (N, F) reference-subtracted last-layer features (:func:`last_layer_features`)."""
        out = {"forces_std": (self.force_scale * self.rigidity_terms(features).sqrt()).numpy()}
        if self.energy_scale is not None:
            out["energy_std"] = float(self.energy_scale * self.rigidity_terms(features.sum(0, keepdim=True)).sqrt()[0])
        return out


def _scalar_columns(layer: torch.nn.Module) -> slice | torch.Tensor:
    """The input columns of a readout layer that its scalar output depends on."""
    if isinstance(layer, o3.Linear):
        return torch.cat([torch.arange(s.start, s.stop) for (_, ir), s in zip(layer.irreps_in, layer.irreps_in.slices())
                          if ir == o3.Irrep("0e")])
    return slice(None)


def last_layer_width(model: AtomisticModel) -> int:
    """F, the number of last-layer features of ``model``."""
    return sum(len(range(layer.in_features)[columns]) if isinstance(columns, slice) else len(columns)
               for layer, columns in ((layer, _scalar_columns(layer)) for layer in model.readout_layers()))


@contextmanager
def last_layer_features(model: AtomisticModel) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """While inside, the model's calls record the inputs of its readout layers. Yields a function
    ``features(numbers)`` that, for the (N,) atomic numbers of the last call, returns (N, F)
    float64 detached features f_i − f_ref(s_i) (see the module docstring).

    Raises:
        ValueError: for a family without linear readout layers (:meth:`AtomisticModel.readout_layers`).
    """
    layers = model.readout_layers()
    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda module, args, k=k: captured.__setitem__(k, args[0].detach()))
             for k, layer in enumerate(layers)]
    columns = [_scalar_columns(layer) for layer in layers]

    def features(numbers: torch.Tensor) -> torch.Tensor:
        rows = torch.cat([captured[k][:, columns[k]].to(torch.float64) for k in range(len(layers))], dim=1)
        num_atoms = rows.shape[0] - model.num_species  # prepare() appends one isolated atom per species
        species = model.species_indices(numbers.to(model.species_table.device))
        return rows[:num_atoms] - rows[num_atoms:][species.to(rows.device)]

    try:
        yield features
    finally:
        for hook in hooks:
            hook.remove()


def _structure_features(model: AtomisticModel, frames: Sequence[Atoms], forces: bool, batch_size: int = 16):
    """Per frame: (its (N, F) features, its predicted energy (eV), its predicted (N, 3) forces or None)."""
    out = []
    for start in range(0, len(frames), batch_size):
        batch = list(frames[start:start + batch_size])
        graph = batch_graphs([atoms_to_graph(atoms, model.cutoff) for atoms in batch])
        with last_layer_features(model) as features:
            predicted = compute_properties(model, graph, forces=forces)
        rows = features(graph.numbers).cpu()
        energies = predicted["energy"].detach().cpu().tolist()
        offsets = np.cumsum([0] + [len(atoms) for atoms in batch])
        for k in range(len(batch)):
            atoms = slice(offsets[k], offsets[k + 1])
            out.append((rows[atoms], energies[k],
                        predicted["forces"][atoms].detach().cpu().to(torch.float64).numpy() if forces else None))
    return out


def fit_llpr(model: AtomisticModel, train: Sequence[Atoms], valid: Sequence[Atoms]) -> LastLayerUncertainty:
    """Fit the LLPR of ``model`` (module docstring): C from the ``train`` structures' atoms, ς²
    and α_F from the ``valid`` structures' reference forces (``atoms.get_forces()`` of their
    attached calculator, e.g. read from extxyz), α_E from their energies when every one has one.

    Raises:
        ValueError: no training or validation structures, validation structures without forces,
            or a family without linear readout layers.
    """
    if not train or not valid:
        raise ValueError("fit_llpr needs training structures (for the covariance) and validation structures "
                         "(for the scales), each with at least one frame.")
    try:
        reference_forces = [atoms.get_forces(apply_constraint=False) for atoms in valid]
    except Exception as error:  # no calculator or no forces stored with the frame
        raise ValueError(f"The validation structures need reference forces (extxyz with forces): {error}") from None
    try:
        reference_energies = [atoms.get_potential_energy() for atoms in valid]
    except Exception:
        reference_energies = None
    model = model.eval()
    train_rows = torch.cat([rows for rows, _, _ in _structure_features(model, train, forces=False)])
    scale = train_rows.pow(2).mean(0).sqrt()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scaled = train_rows / scale
    gram = scaled.T @ scaled
    validation = _structure_features(model, valid, forces=True)
    squared_errors = np.concatenate([((predicted - reference) ** 2).sum(1)
                                     for (_, _, predicted), reference in zip(validation, reference_forces)])
    atom_rows = torch.cat([rows for rows, _, _ in validation])
    mean_diagonal = float(gram.diagonal().mean())
    best = None
    for relative in REGULARIZERS:
        regularizer = relative * mean_diagonal
        inverse = torch.linalg.inv(gram + regularizer * torch.eye(gram.shape[0], dtype=gram.dtype))
        fit = LastLayerUncertainty(inverse, scale, 1.0, None, regularizer)
        terms = np.maximum(fit.rigidity_terms(atom_rows).numpy(), 1e-300)
        alpha_squared = float(np.mean(squared_errors / terms))  # the NLL's optimum for this ς²
        variance = alpha_squared * terms / 3.0  # per force component
        nll = float(np.mean(1.5 * np.log(2 * np.pi * variance) + squared_errors / (2 * variance)))
        if best is None or nll < best[0]:
            best = (nll, fit, alpha_squared)
    _, fit, alpha_squared = best
    energy_scale = None
    if reference_energies is not None:
        totals = torch.stack([rows.sum(0) for rows, _, _ in validation])
        terms = np.maximum(fit.rigidity_terms(totals).numpy(), 1e-300)
        errors = np.array([predicted for _, predicted, _ in validation]) - np.array(reference_energies)
        energy_scale = float(np.sqrt(np.mean(errors ** 2 / terms)))
    return LastLayerUncertainty(fit.inverse_covariance, scale, float(np.sqrt(alpha_squared)), energy_scale,
                                fit.regularizer)
