"""Reference implementations on e3nn's own tensor products, to check the fast dense ones against.

Straightforward and slow: one e3nn kernel per path, per-edge messages summed with a scatter.
"""

from __future__ import annotations

import torch
from torch import nn

from eqcalc.models.mace import ProductBasis, product_paths
from eqcalc.nn.irreps import TensorProduct
from eqcalc.nn.neighbour_slots import NeighbourSlots
from eqcalc.nn.scatter import scatter_sum
from eqcalc.nn.tensor_product import ConvolutionProduct


def reference_convolution(
    fast: ConvolutionProduct,
    features: torch.Tensor,
    sh: torch.Tensor,
    weights: torch.Tensor,
    edge_index: torch.Tensor,
) -> torch.Tensor:
    """Σ_j e3nn-TP(x_j, Y_ij; w_ij) per centre i over plain edges (E, ·), with ``fast``'s paths."""
    instructions = [(*path, "uvu", True) for path in fast.paths]
    tensor_product = TensorProduct(
        fast.irreps_in1, fast.irreps_in2, fast.irreps_out, instructions,
        internal_weights=False, shared_weights=False,
    ).to(features.dtype)
    messages = tensor_product(features[edge_index[1]], sh, weights)
    return scatter_sum(messages, edge_index[0], features.shape[0])


def per_slot(slots: NeighbourSlots, edge_values: torch.Tensor) -> torch.Tensor:
    """Per-edge values laid out per neighbour slot, zeros in the padding."""
    return slots.pad(edge_values, torch.zeros(()))


class ReferenceProductBasis(nn.Module):
    """The same polynomial as :class:`ProductBasis`, one e3nn tensor product per order and
    explicit per-block species weights, taking ``fast``'s weights."""

    def __init__(self, fast: ProductBasis):
        super().__init__()
        self.fast = fast
        steps = product_paths(fast.irreps_a, fast.irreps_out, fast.correlation)
        self.products = nn.ModuleList(
            TensorProduct(irreps_prev, fast.irreps_a, irreps_next, instructions)
            for irreps_prev, irreps_next, instructions in steps
        ).to(fast.weights[0].dtype)
        self.irreps = [fast.irreps_a] + [p.irreps_out for p in self.products]

    def mix(self, order: int, basis: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Σ_b w[Z, b, c] B_b / √(#b) per output block of the irrep of b."""
        irreps, weights = self.irreps[order - 1], self.fast.weights[order - 1][species]
        n, channels = basis.shape[0], self.fast.channels
        outputs, row = [], 0
        for _, ir in self.fast.irreps_out:
            blocks = [
                basis[:, s].reshape(n, channels, ir.dim)
                for (_, ir_b), s in zip(irreps, irreps.slices())
                if ir_b == ir
            ]
            mixed = sum(weights[:, row + j, :, None] * block for j, block in enumerate(blocks)) / len(blocks) ** 0.5
            outputs.append(mixed.reshape(n, -1))
            row += len(blocks)
        return torch.cat(outputs, dim=1)

    def forward(self, atomic_basis: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        basis = atomic_basis
        out = self.mix(1, basis, species)
        for order, product in enumerate(self.products, start=2):
            basis = product(basis, atomic_basis)
            out = out + self.mix(order, basis, species)
        return out
