"""Energy, forces and stress of any model: the one autograd path.

    F_i = −∂E/∂r_i,        σ = (1/V) ∂E/∂ε

The strain ε is a symmetric (B, 3, 3) displacement gradient applied at ε = 0 to
positions and cell alike, r → r (1 + ε), cell → cell (1 + ε), so σ follows ASE's
convention (positive = tensile, eV/Å³).

Models with tensor outputs (:meth:`~eqcalc.models.base.AtomisticModel.add_outputs`) give per-atom
charges, dipoles and polarisabilities from the same pass; :func:`structure_responses` assembles
each structure's dipole and polarisability from them.
"""

from __future__ import annotations

from typing import Callable

import torch
from ase.data import atomic_masses

from .data.graph import AtomicGraph
from .models.base import AtomisticModel
from .models.setup_lock import MODEL_SETUP_LOCK
from .nn.scatter import scatter_sum


def edge_vectors(
    positions: torch.Tensor, cell: torch.Tensor, edge_index: torch.Tensor, shifts: torch.Tensor, batch: torch.Tensor
) -> torch.Tensor:
    """r_j + S·cell − r_i for every edge: (E, 3), same dtype as ``positions``."""
    if cell.shape[0] == 1:
        offsets = shifts @ cell[0]
    else:
        offsets = torch.einsum("ek,ekl->el", shifts, cell[batch[edge_index[0]]])
    return positions[edge_index[1]] - positions[edge_index[0]] + offsets


@torch.enable_grad()  # forces and stress are gradients, also inside a caller's no_grad()
def compute_properties(
    model: AtomisticModel | Callable[..., torch.Tensor],
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = False,
    training: bool = False,
    counted: torch.Tensor | None = None,
    responses: bool = False,
) -> dict[str, torch.Tensor]:
    """Evaluate ``model`` on ``graph`` and differentiate the energy.

    Args:
        model: an :class:`AtomisticModel`, or a function with its call signature
            (:func:`eqcalc.compilation.compile_model`).
        forces: compute forces.
        stress: compute the stress of every structure (zeros where the cell volume is 0).
        training: keep the autograd graph of forces/stress so a loss on them can be back-propagated.
        counted: (N,) bool, the atoms whose energies make up "energy" and are differentiated
            (default all). Chunked evaluation (eqcalc.data.chunks) counts a chunk's owned atoms only.
        responses: also the per-atom tensor outputs of the model's heads, from the same pass
            (:meth:`~eqcalc.models.base.AtomisticModel.responses`; an AtomisticModel only).

    Returns:
        "energy": (B,) float64 eV; "energies": (N,) float64 eV per atom;
        "forces": (N, 3) eV/Å; "stress": (B, 3, 3) eV/Å³ (when asked for); with ``responses``
        the heads' "charges" (N,), "atomic_dipoles" (N, 3), "atomic_polarizabilities" (N, 3, 3).
    """
    positions = graph.positions
    cell = graph.cell
    inputs: list[torch.Tensor] = []
    if forces:
        positions = positions.detach().requires_grad_(True)
        inputs.append(positions)
    if stress:
        strain = torch.zeros_like(cell, requires_grad=True)
        inputs.append(strain)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        positions = positions + torch.einsum("nk,nkl->nl", positions, symmetric[graph.batch])
        cell = cell + cell @ symmetric
    vectors = edge_vectors(positions, cell, graph.edge_index, graph.shifts, graph.batch)
    arguments = (graph.numbers, graph.edge_index, vectors, graph.batch, graph.num_graphs)
    with MODEL_SETUP_LOCK.shared():  # never while a model is set up in another thread
        head_outputs = model.responses(*arguments) if responses else {"energies": model(*arguments)}
    atomic_energies = head_outputs.pop("energies")
    counted_energies = atomic_energies if counted is None else torch.where(counted, atomic_energies, 0.0)
    energy = scatter_sum(counted_energies, graph.batch, graph.num_graphs)
    results = {"energy": energy, "energies": atomic_energies, **head_outputs}
    if not inputs:
        return results
    grads = torch.autograd.grad(
        [energy.sum()], inputs, create_graph=training, retain_graph=training, allow_unused=True
    )
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    if forces:
        results["forces"] = -grads[0]
    if stress:
        volume = torch.linalg.det(graph.cell).abs()
        safe_volume = torch.where(volume > 0, volume, torch.ones_like(volume))
        results["stress"] = torch.where(
            (volume > 0)[:, None, None], grads[-1] / safe_volume[:, None, None], torch.zeros_like(grads[-1])
        )
    return results


def compute_properties_and_responses(
    model: AtomisticModel, graph: AtomicGraph, total_charge: torch.Tensor | None = None, **options
) -> dict[str, torch.Tensor]:
    """:func:`compute_properties` (``options`` as there) and, for a model with tensor outputs, each
    structure's "charges", "dipole" and "polarizability" (:func:`structure_responses`, with the
    structures' total charges ``total_charge`` (B,) e, default neutral)."""
    results = compute_properties(model, graph, responses=bool(model.outputs), **options)
    if model.outputs:
        results.update(structure_responses(
            results, graph.positions, graph.numbers, graph.batch, graph.num_graphs, total_charge
        ))
    return results


_MASSES = torch.as_tensor(atomic_masses, dtype=torch.float64)


def structure_responses(
    outputs: dict[str, torch.Tensor],
    positions: torch.Tensor,
    numbers: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    total_charge: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each structure's dipole and polarisability from the per-atom head outputs.

        q̃_i = q_i − (Σ_{j∈k} q_j − Q_k) / N_k,        μ_k = Σ_{i∈k} [q̃_i (r_i − R_k) + p_i],
        α_k = Σ_{i∈k} α_i

    with R_k the centre of mass of structure k: Σ q̃ = Q_k exactly, and μ does not depend on
    the origin of the coordinates, for neutral and charged structures alike.

    Args:
        outputs: "charges" (N,) e and "atomic_dipoles" (N, 3) e·Å, and/or
            "atomic_polarizabilities" (N, 3, 3) Å³, as :func:`compute_properties` returns them.
        positions: (N, 3) Å (unwrapped: a molecule split across a periodic boundary has no dipole here).
        numbers: (N,) atomic numbers; batch: (N,) structure index.
        total_charge: (B,) e (default 0: neutral).

    Returns:
        "charges" (N,) q̃, "dipole" (B, 3) e·Å, "polarizability" (B, 3, 3) Å³: those the outputs allow.
    """
    results = {}
    if "charges" in outputs:
        charges = outputs["charges"]
        counts = scatter_sum(torch.ones_like(charges), batch, num_graphs)
        target = charges.new_zeros(num_graphs) if total_charge is None else total_charge.to(charges)
        excess = (scatter_sum(charges, batch, num_graphs) - target) / counts
        charges = charges - excess[batch]
        masses = _MASSES.to(positions.device)[numbers].to(positions.dtype)
        centres = scatter_sum(masses[:, None] * positions, batch, num_graphs) / scatter_sum(masses, batch, num_graphs)[:, None]
        moments = charges[:, None] * (positions - centres[batch]) + outputs["atomic_dipoles"]
        results["charges"] = charges
        results["dipole"] = scatter_sum(moments, batch, num_graphs)
    if "atomic_polarizabilities" in outputs:
        results["polarizability"] = scatter_sum(outputs["atomic_polarizabilities"], batch, num_graphs)
    return results
