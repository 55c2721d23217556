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

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.activations import mlp
from ..nn.irreps import (
    EdgeEmbedding,
    EquivariantConvolution,
    FullyConnectedTensorProduct,
    coupling_paths,
    feature_irreps,
    irreps_up_to,
)
from ..nn.neighbour_slots import NeighbourSlots
from ..nn.tensor_product import ExactCoefficients, path_coefficients
from .base import AtomisticModel
from .registry import register_family


def product_paths(
    irreps_a: o3.Irreps, irreps_out: o3.Irreps, correlation: int
) -> list[tuple[o3.Irreps, o3.Irreps, list]]:
    """The channel-wise products B⁽ν⁾ = CG(B⁽ν⁻¹⁾ ⊗ A), ν = 2…correlation: (irreps of B⁽ν⁻¹⁾,
    irreps of B⁽ν⁾, "uuu" instructions) each.

    B⁽ν⁾ keeps only irreps that can still couple, with the remaining factors of A,
    to an output irrep; B⁽²⁾ = A ⊗ A keeps the symmetric paths only.
    """
    irreps_a, irreps_out = o3.Irreps(irreps_a), o3.Irreps(irreps_out)
    outputs = {ir for _, ir in irreps_out}
    steps = []
    irreps = irreps_a
    for order in range(2, correlation + 1):
        lmax_keep = irreps_out.lmax + (correlation - order) * irreps_a.lmax
        keep = outputs if order == correlation else irreps_up_to(lmax_keep)
        irreps_next, instructions = coupling_paths(
            irreps, irreps_a, keep, "uuu", weighted=False, symmetric=order == 2
        )
        steps.append((irreps, irreps_next, instructions))
        irreps = irreps_next
    return steps


def per_channel_slices(irreps: o3.Irreps) -> list[slice]:
    """Slices of each block within one channel (blocks of dims 2l+1 laid end to end)."""
    slices, start = [], 0
    for _, ir in irreps:
        slices.append(slice(start, start + ir.dim))
        start += ir.dim
    return slices


@dataclass
class SpeciesGroups:
    """Atoms sorted by species: ``order`` (N,) int64 atom indices, species 0 first; ``counts``
    the number of atoms of each species (a plain list: the sizes of the per-species slices)."""

    order: torch.Tensor
    counts: list[int]

    @classmethod
    @torch.compiler.disable  # data-dependent sizes: made eagerly, outside any compiled graph
    def from_species(cls, species: torch.Tensor, num_species: int) -> "SpeciesGroups":
        """species (N,) int64 indices in 0…num_species − 1."""
        return cls(torch.argsort(species), torch.bincount(species, minlength=num_species).tolist())


class ProductBasis(ExactCoefficients):
    """Σ_ν W⁽ν⁾_Z · B⁽ν⁾ (ν = 1…correlation): species-weighted channel-wise products of A.

    B⁽¹⁾ = A and B⁽ν⁾ = CG(B⁽ν⁻¹⁾ ⊗ A) channel by channel (paths of :func:`product_paths`):
    a polynomial of degree ``correlation`` in A, i.e. body order correlation + 1.
    Output block k (irrep L) of channel c sums, over the blocks b of B⁽ν⁾ with irrep L,
    w⁽ν⁾[Z, b, c] B⁽ν⁾_b / √(#b).

    Every B⁽ν⁾ block is a fixed linear map of A^{⊗ν} (channel-independent
    coefficients U⁽ν⁾, composed from the Clebsch–Gordan paths), so the whole sum is
    evaluated per species and channel as

        out_M = Σ_{i1} A_{i1} Σ_ν Σ_{i2…iν} Uᵛw[M, i1, i2…iν] A_{i2}⋯A_{iν},
        Uᵛw = Σ_b w⁽ν⁾_b U⁽ν⁾_b,

    one batched matmul over channels per order (the monomials A^{⊗(ν−1)} times Uᵛw).
    """

    def __init__(self, irreps_a: o3.Irreps, irreps_out: o3.Irreps, correlation: int, num_species: int):
        super().__init__()
        self.irreps_a, self.irreps_out = o3.Irreps(irreps_a), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in self.irreps_a + self.irreps_out}
        if len(channels) != 1:
            raise ValueError(f"ProductBasis needs one multiplicity throughout, got {irreps_a} → {irreps_out}.")
        self.channels = channels.pop()
        self.correlation = int(correlation)
        self.steps = product_paths(self.irreps_a, self.irreps_out, self.correlation)
        dim_a = self.irreps_a.dim // self.channels
        a_slices = per_channel_slices(self.irreps_a)
        # basis[ν-1]: (per-channel dim of B⁽ν⁾, dim_a^ν) coefficients of B⁽ν⁾ in A^{⊗ν}
        bases = [(self.irreps_a, torch.eye(dim_a, dtype=torch.float64))]
        for irreps_prev, irreps_next, instructions in self.steps:
            previous = bases[-1][1]
            prev_slices, next_slices = per_channel_slices(irreps_prev), per_channel_slices(irreps_next)
            basis = torch.zeros(irreps_next.dim // self.channels, previous.shape[1], dim_a, dtype=torch.float64)
            for i1, i2, i_out, *_ in instructions:
                ls = irreps_prev[i1].ir.l, self.irreps_a[i2].ir.l, irreps_next[i_out].ir.l
                product = torch.einsum("abm,aI->mIb", path_coefficients(*ls), previous[prev_slices[i1]])
                basis[next_slices[i_out], :, a_slices[i2]] = product
            bases.append((irreps_next, basis.reshape(basis.shape[0], -1)))
        self.dim_a = dim_a
        self.out_dims = [ir.dim for _, ir in self.irreps_out]
        self.a_block_sizes = [mul * ir.dim for mul, ir in self.irreps_a]  # plain ints for forward
        self.weights = nn.ParameterList()
        for order, (irreps_b, basis) in enumerate(bases, start=1):
            b_slices = per_channel_slices(irreps_b)
            rows = []  # per output block k: its B blocks' coefficients / √#blocks, (#blocks, M_k · dim_a^ν)
            for _, ir in self.irreps_out:
                blocks = [b for b, (_, ir_b) in enumerate(irreps_b) if ir_b == ir]
                if not blocks:
                    raise ValueError(f"ProductBasis: output irrep {ir} does not occur in B({order}) = {irreps_b}.")
                rows.append(torch.stack([basis[b_slices[b]].reshape(-1) for b in blocks]) / len(blocks) ** 0.5)
            # (rows, dim_a^(ν−1) · M_total · dim_a): columns ordered (i2…iν, M, i1), mostly zero
            coefficients = torch.block_diag(*rows).view(-1, sum(self.out_dims), dim_a, dim_a ** (order - 1))
            coefficients = coefficients.permute(0, 3, 1, 2).reshape(len(coefficients), -1)
            columns = torch.nonzero(coefficients.abs().amax(0) > 1e-12).squeeze(1)
            self.register_coefficients(f"coefficients_{order}", coefficients[:, columns])
            self.register_buffer(f"columns_{order}", columns, persistent=False)
            self.weights.append(nn.Parameter(torch.randn(num_species, sum(len(r) for r in rows), self.channels)))

    def forward(
        self, atomic_basis: torch.Tensor, species: torch.Tensor, groups: SpeciesGroups | None = None
    ) -> torch.Tensor:
        """atomic_basis (N, irreps_a.dim), species (N,) -> (N, irreps_out.dim). ``groups``: the
        atoms grouped by species (made from ``species`` when not given)."""
        n = atomic_basis.shape[0]
        if groups is None:
            groups = SpeciesGroups.from_species(species, len(self.weights[0]))
        blocks = atomic_basis.split(self.a_block_sizes, dim=1)
        a = torch.cat([b.reshape(n, self.channels, -1) for b in blocks], dim=2)  # (N, C, dim_a)
        by_species = [
            self.species_polynomial(a_z.transpose(0, 1), z)
            for z, a_z in enumerate(a.index_select(0, groups.order).split(groups.counts))
            if groups.counts[z]
        ]
        sorted_out = torch.cat(by_species, dim=1)  # (C, N, M_total), atoms in species order
        out = torch.empty_like(sorted_out).index_copy(1, groups.order, sorted_out).permute(1, 0, 2)
        return torch.cat([o.reshape(n, -1) for o in out.split(self.out_dims, dim=2)], dim=1)

    def species_polynomial(self, a: torch.Tensor, z: int) -> torch.Tensor:
        """a (C, n, dim_a): atomic bases of n atoms of species z -> (C, n, M_total) outputs."""
        channels, n, dim_a = a.shape
        m_total = sum(self.out_dims)
        power = a.new_ones(channels, n, 1)  # A^{⊗(ν−1)}: (C, n, dim_a^(ν−1))
        inner = None  # Σ_ν Σ_{i2…iν} Uᵛw[M, i1, i2…iν] A_i2⋯A_iν: (C, n, M_total · dim_a)
        for nu in range(1, self.correlation + 1):
            # Uᵛw of species z: (C, dim_a^(ν−1), M_total · dim_a), from its non-zero columns
            nonzero = self.weights[nu - 1][z].t() @ getattr(self, f"coefficients_{nu}")
            weighted = nonzero.new_zeros(channels, dim_a ** (nu - 1), m_total * dim_a)
            weighted.view(channels, -1).index_copy_(1, getattr(self, f"columns_{nu}"), nonzero)
            term = torch.bmm(power, weighted)
            inner = term if inner is None else inner + term
            if nu < self.correlation:
                shape = (channels, n, power.shape[2], dim_a)
                power = (power[..., :, None].expand(shape) * a[..., None, :].expand(shape)).view(channels, n, -1)
        return torch.matmul(inner.view(channels, n, m_total, dim_a), a[..., None]).squeeze(-1)


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

    def forward(self, features, species, groups, species_one_hot, sh, radial, slots, avg_num_neighbors: float):
        """features (N, irreps_in.dim) -> (N, irreps_out.dim); ``groups``: the
        :class:`SpeciesGroups` of ``species``."""
        atomic_basis = self.atomic_basis(features, sh, radial, slots, avg_num_neighbors)
        message = self.message(self.product_basis(atomic_basis, species, groups))
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
        slots = NeighbourSlots.from_edges(edge_index, species.shape[0], edge_vectors)
        groups = SpeciesGroups.from_species(species, self.num_species)
        radial, sh = self.edge_embedding(edge_vectors, slots)
        one_hot = nn.functional.one_hot(species, self.num_species).to(radial.dtype)
        features = self.embedding(species)
        outputs = []
        for layer in self.layers:
            features = layer(features, species, groups, one_hot, sh, radial, slots, self.avg_num_neighbors)
            outputs.append(features)
        return outputs

    @property
    def message_passing_hops(self) -> int:
        return self.num_layers

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs):
        features = self.node_features(species, edge_index, edge_vectors)
        return sum(readout(h) for readout, h in zip(self.readouts, features)).squeeze(-1)
