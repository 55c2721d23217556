"""Weighted loss on energy per atom, force components and stress components (and, for models
with tensor outputs, dipole and polarisability components).

    L = w_E Σ_k ρ((Ê_k − E_k)/N_k) / n_E  +  w_F Σ_ia ρ(F̂_ia − F_ia) / n_F  +  w_σ Σ_kab ρ(σ̂_kab − σ_kab) / n_σ
        + w_μ Σ_ka ρ(μ̂_ka − μ_ka) / n_μ  +  w_α Σ_kab ρ(α̂_kab − α_kab) / n_α

with ρ(x) = x² (MSE) or the Huber function, and each sum over labelled entries only
(masks, never zero-filled labels). n_E, n_F, n_σ are the numbers of labelled entries; with
several processes they are the global counts, so that averaging the per-process gradients
gives exactly the gradient of the loss on the whole distributed batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.labels import Labels

TERMS = ("energy", "forces", "stress", "dipole", "polarizability")


def label_counts(labels: Labels) -> torch.Tensor:
    """(len(TERMS),) float64 numbers of labelled energy, force-, stress-, dipole- and
    polarisability-component entries."""
    return torch.stack(
        [labels.has_energy.sum(), 3 * labels.has_forces.sum(), 9 * labels.has_stress.sum(),
         3 * labels.has_dipole.sum(), 9 * labels.has_polarizability.sum()]
    ).to(torch.float64)


def masked_errors(predicted: dict[str, torch.Tensor], labels: Labels) -> dict[str, torch.Tensor]:
    """Errors (prediction − label) of the labelled entries only, flattened:
    energy per atom (eV/atom), force components (eV/Å), stress components (eV/Å³), dipole
    components (e·Å), polarisability components (Å³): those predicted."""
    errors = {}
    per_atom = (predicted["energy"] - labels.energy) / labels.num_atoms
    errors["energy"] = per_atom[labels.has_energy]
    if "forces" in predicted:
        errors["forces"] = (predicted["forces"] - labels.forces)[labels.has_forces].reshape(-1)
    if "stress" in predicted:
        errors["stress"] = (predicted["stress"] - labels.stress)[labels.has_stress].reshape(-1)
    if "dipole" in predicted:
        errors["dipole"] = (predicted["dipole"] - labels.dipole)[labels.has_dipole].reshape(-1)
    if "polarizability" in predicted:
        errors["polarizability"] = (predicted["polarizability"] - labels.polarizability)[labels.has_polarizability].reshape(-1)
    return errors


@dataclass
class WeightedLoss:
    """The training loss; weights in the squared inverse units of the labels."""

    energy_weight: float = 1.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0
    dipole_weight: float = 0.0
    polarizability_weight: float = 0.0
    kind: str = "mse"
    huber_delta: float = 0.01

    def __post_init__(self):
        if self.kind not in ("mse", "huber"):
            raise ValueError(f"loss must be 'mse' or 'huber', got {self.kind!r}.")

    def weights(self) -> dict[str, float]:
        return {"energy": self.energy_weight, "forces": self.forces_weight, "stress": self.stress_weight,
                "dipole": self.dipole_weight, "polarizability": self.polarizability_weight}

    def penalty(self, errors: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return errors.square().sum()
        zeros = torch.zeros_like(errors)
        return torch.nn.functional.huber_loss(errors, zeros, reduction="sum", delta=self.huber_delta)

    def term_sums(self, predicted: dict[str, torch.Tensor], labels: Labels) -> torch.Tensor:
        """(len(TERMS),) float64 Σ ρ(error) of each term (0 where not predicted)."""
        errors = masked_errors(predicted, labels)
        zero = predicted["energy"].new_zeros(())
        return torch.stack([self.penalty(errors[term]) if term in errors else zero for term in TERMS])

    def combine(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Σ_term w_term · sums_term / counts_term over the terms with a weight and labels."""
        weights = self.weights()
        total = sums.new_zeros(())
        for k, term in enumerate(TERMS):
            if weights[term] > 0 and counts[k] > 0:
                total = total + weights[term] * sums[k] / counts[k]
        return total

    def __call__(
        self, predicted: dict[str, torch.Tensor], labels: Labels, counts: torch.Tensor | None = None, scale: float = 1.0
    ) -> torch.Tensor:
        """Scalar loss (float64).

        Args:
            counts: (len(TERMS),) normalisers n_E, n_F, n_σ, n_μ, n_α (default: this batch's label counts).
            scale: multiplies the result (the number of processes when ``counts`` are global).
        """
        counts = label_counts(labels) if counts is None else counts
        return self.combine(self.term_sums(predicted, labels), counts) * scale
