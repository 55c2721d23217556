"""MACE: higher-body-order equivariant messages (Batatia et al. 2022).

Per layer, each atom gathers an equivariant atomic basis

    A_i = Σ_j R(d_ij) Y(r̂_ij) ⊗ h_j / ⟨n⟩                  (one convolution, 2-body)

and forms channel-wise products of it up to ``correlation`` factors,

    B⁽¹⁾ = A,   B⁽ν⁾ = CG(B⁽ν⁻¹⁾ ⊗ A)                      ((ν+1)-body features),

which are mixed with species-dependent weights into the layer's output irreps.
The message m_i = linear(Σ_ν W⁽ν⁾_{Z_i} B⁽ν⁾_i) updates h_i together with a
species-dependent self-connection. The energy sums a readout of every layer's
scalars (linear for inner layers, a small MLP for the last).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.activations import mlp
from ..nn.irreps import (
    EdgeEmbedding,
    EquivariantConvolution,
    FullyConnectedTensorProduct,
    TensorProduct,
    coupling_paths,
    feature_irreps,
    irreps_up_to,
)
from .base import AtomisticModel
from .registry import register_family


class SpeciesChannelMix(nn.Module):
    """out_{c,k} = Σ_{b : ir_b = ir_k} w[Z, b, c] x_{c,b} / √(#b): species- and channel-dependent
    weights on every input block, summed into the output block of the same irrep.

    All blocks of ``irreps_in`` and ``irreps_out`` have the same multiplicity C
    (channels are never mixed), and every output irrep occurs in ``irreps_in``.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_species: int):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_in + self.irreps_out}
        if len(channels) != 1:
            raise ValueError(f"SpeciesChannelMix needs one multiplicity throughout, got {irreps_in} → {irreps_out}.")
        self.channels = channels.pop()
        slices = self.irreps_in.slices()
        self.groups: list[tuple[int, int, int]] = []  # per output block: first weight row, #input blocks, irrep dim
        num_rows = 0
        for k, (_, ir) in enumerate(self.irreps_out):
            blocks = [b for b, (_, ir_b) in enumerate(self.irreps_in) if ir_b == ir]
            if not blocks:
                raise ValueError(f"SpeciesChannelMix: output irrep {ir} does not occur in the input {irreps_in}.")
            columns = [i for b in blocks for i in range(slices[b].start, slices[b].stop)]
            self.register_buffer(f"columns_{k}", torch.tensor(columns, dtype=torch.int64), persistent=False)
            self.groups.append((num_rows, len(blocks), ir.dim))
            num_rows += len(blocks)
        self.weight = nn.Parameter(torch.randn(num_species, num_rows, self.channels))

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """features (N, irreps_in.dim), species (N,) -> (N, irreps_out.dim)."""
        n = features.shape[0]
        weights = self.weight[species]
        outputs = []
        for k, (start, num_blocks, dim) in enumerate(self.groups):
            x = features[:, getattr(self, f"columns_{k}")].view(n, num_blocks, self.channels, dim)
            w = weights[:, start : start + num_blocks]
            mixed = torch.einsum("nbcm,nbc->ncm", x, w) / num_blocks**0.5
            outputs.append(mixed.reshape(n, self.channels * dim))
        return torch.cat(outputs, dim=-1)


class ProductBasis(nn.Module):
    """Σ_{ν=1}^{correlation} W⁽ν⁾_Z · B⁽ν⁾: channel-wise products of the atomic basis A.

    B⁽ν⁾ = CG(B⁽ν⁻¹⁾ ⊗ A) ("uuu": channel c of B⁽ν⁻¹⁾ with channel c of A) keeps
    only irreps that can still couple, with the remaining factors of A, to an
    output irrep. A polynomial of degree ``correlation`` in A, i.e. body order
    correlation + 1.
    """

    def __init__(self, irreps_a: o3.Irreps, irreps_out: o3.Irreps, correlation: int, num_species: int):
        super().__init__()
        irreps_a, irreps_out = o3.Irreps(irreps_a), o3.Irreps(irreps_out)
        lmax_a, lmax_out = irreps_a.lmax, irreps_out.lmax
        outputs = {ir for _, ir in irreps_out}
        self.products = nn.ModuleList()
        self.mixes = nn.ModuleList([SpeciesChannelMix(irreps_a, irreps_out, num_species)])
        irreps = irreps_a
        for order in range(2, correlation + 1):
            keep = outputs if order == correlation else irreps_up_to(lmax_out + (correlation - order) * lmax_a)
            irreps_next, instructions = coupling_paths(
                irreps, irreps_a, keep, "uuu", weighted=False, symmetric=order == 2
            )
            product = TensorProduct(irreps, irreps_a, irreps_next, instructions)
            self.products.append(product)
            self.mixes.append(SpeciesChannelMix(irreps_next, irreps_out, num_species))
            irreps = irreps_next

    def forward(self, atomic_basis: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """atomic_basis (N, irreps_a.dim), species (N,) -> (N, irreps_out.dim)."""
        basis = atomic_basis
        out = self.mixes[0](basis, species)
        for product, mix in zip(self.products, self.mixes[1:]):
            basis = product(basis, atomic_basis)
            out = out + mix(basis, species)
        return out


class MACELayer(nn.Module):
    """h' = linear(ProductBasis(A(h))) + self_connection(h, Z)."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        num_channels: int,
        correlation: int,
        num_species: int,
        num_basis: int,
        radial_hidden: int,
        radial_layers: int,
    ):
        super().__init__()
        self.irreps_out = o3.Irreps(irreps_out)
        irreps_a = o3.Irreps([(num_channels, ir) for _, ir in irreps_sh])
        self.atomic_basis = EquivariantConvolution(
            irreps_in, irreps_sh, irreps_a, num_basis, radial_hidden, radial_layers
        )
        self.product_basis = ProductBasis(irreps_a, self.irreps_out, correlation, num_species)
        self.message = o3.Linear(self.irreps_out, self.irreps_out)
        self.self_connection = FullyConnectedTensorProduct(irreps_in, f"{num_species}x0e", self.irreps_out)

    def forward(self, features, species, species_one_hot, sh, radial, edge_index, avg_num_neighbors: float):
        """features (N, irreps_in.dim) -> (N, irreps_out.dim)."""
        atomic_basis = self.atomic_basis(features, sh, radial, edge_index, avg_num_neighbors)
        message = self.message(self.product_basis(atomic_basis, species))
        return message + self.self_connection(features, species_one_hot)


@register_family("mace")
class MACE(AtomisticModel):
    """MACE with Bessel × polynomial (p = 6) radial basis.

    Args:
        num_channels: channels C of every feature (hidden irreps C×0e + C×1o + … up to max_L).
        max_L: largest l of the hidden node features (natural parity, 0e+1o+2e…).
        lmax: largest l of the edge spherical harmonics and of the atomic basis A (≥ max_L, ≤ 3).
        correlation: largest number ν of A factors in a product (body order ν + 1).
        num_layers: interaction layers; the last keeps only scalars.
        num_basis: number of Bessel functions.
        radial_hidden, radial_layers: width and depth of each layer's radial MLP.
        readout_hidden: width of the last layer's readout MLP.
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_channels: int = 64,
        max_L: int = 1,
        lmax: int = 3,
        correlation: int = 3,
        num_layers: int = 2,
        num_basis: int = 8,
        radial_hidden: int = 64,
        radial_layers: int = 3,
        readout_hidden: int = 16,
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        if not 0 <= int(max_L) <= int(lmax) <= 3:
            raise ValueError(f"mace needs 0 ≤ max_L ≤ lmax ≤ 3, got max_L={max_L}, lmax={lmax}.")
        if int(correlation) < 1 or int(num_layers) < 1:
            raise ValueError(f"mace needs correlation ≥ 1 and num_layers ≥ 1, got {correlation} and {num_layers}.")
        self.num_channels = int(num_channels)
        self.max_L = int(max_L)
        self.lmax = int(lmax)
        self.correlation = int(correlation)
        self.num_layers = int(num_layers)
        self.num_basis = int(num_basis)
        self.radial_hidden = int(radial_hidden)
        self.radial_layers = int(radial_layers)
        self.readout_hidden = int(readout_hidden)

        self.embedding = nn.Embedding(self.num_species, self.num_channels)
        self.edge_embedding = EdgeEmbedding(self.cutoff, self.lmax, self.num_basis)
        scalars = o3.Irreps(f"{self.num_channels}x0e")
        hidden = feature_irreps(self.num_channels, self.max_L, parity=False)
        irreps = scalars
        layers = []
        for t in range(self.num_layers):
            irreps_out = scalars if t == self.num_layers - 1 else hidden
            layers.append(
                MACELayer(
                    irreps, self.edge_embedding.irreps_sh, irreps_out, self.num_channels, self.correlation,
                    self.num_species, self.num_basis, self.radial_hidden, self.radial_layers,
                )
            )
            irreps = irreps_out
        self.layers = nn.ModuleList(layers)
        self.readouts = nn.ModuleList(
            [o3.Linear(layer.irreps_out, "1x0e") for layer in self.layers[:-1]]
            + [mlp([self.num_channels, self.readout_hidden, 1], nn.SiLU)]
        )

    @property
    def feature_irreps(self) -> list[o3.Irreps]:
        """Irreps of the node features after each layer (see :meth:`node_features`)."""
        return [layer.irreps_out for layer in self.layers]

    def node_features(
        self, species: torch.Tensor, edge_index: torch.Tensor, edge_vectors: torch.Tensor
    ) -> list[torch.Tensor]:
        """Node features after each layer: list of (N, feature_irreps[t].dim) tensors.

        Arguments as for :meth:`atomic_outputs`.
        """
        radial, sh = self.edge_embedding(edge_vectors)
        one_hot = nn.functional.one_hot(species, self.num_species).to(radial.dtype)
        features = self.embedding(species)
        outputs = []
        for layer in self.layers:
            features = layer(features, species, one_hot, sh, radial, edge_index, self.avg_num_neighbors)
            outputs.append(features)
        return outputs

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs):
        features = self.node_features(species, edge_index, edge_vectors)
        return sum(readout(h) for readout, h in zip(self.readouts, features)).squeeze(-1)
