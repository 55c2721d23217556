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

import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn import kernels
from ..nn.activations import mlp
from ..nn.irreps import (
    EdgeEmbedding,
    EquivariantConvolution,
    FullyConnectedTensorProduct,
    coupling_paths,
    feature_irreps,
    irrep_channels,
    irrep_multiplicity,
    irreps_up_to,
)
from ..nn.distance_transforms import TRANSFORMS, build_distance_transform
from ..nn.neighbour_slots import NeighbourSlots
from ..nn.pair_repulsion import ZBLRepulsion
from ..nn.tensor_product import ExactCoefficients, path_coefficients
from .base import AtomisticModel
from .heads import AtomFeatures
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
    the number of atoms of each species (a plain list: the sizes of the per-species slices);
    ``offsets`` (num_species + 1,) int64 where each species starts in ``order`` (and N)."""

    order: torch.Tensor
    counts: list[int]
    offsets: torch.Tensor

    @classmethod
    @torch.compiler.disable  # data-dependent sizes: made eagerly, outside any compiled graph
    def from_species(cls, species: torch.Tensor, num_species: int) -> "SpeciesGroups":
        """species (N,) int64 indices in 0…num_species − 1."""
        counts = torch.bincount(species, minlength=num_species)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return cls(torch.argsort(species), counts.tolist(), offsets)


def symmetric_monomials(dim: int, degree: int) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """The monomials x_{j1}⋯x_{jν} (j1 ≤ … ≤ jν) of degree ν in ``dim`` variables, in
    lexicographic order, and (dim^ν,) int64: the monomial of each flattened index
    (i1, …, iν) of x^{⊗ν} (row-major), i.e. of its sorted indices."""
    monomials = list(itertools.combinations_with_replacement(range(dim), degree))
    position = {m: k for k, m in enumerate(monomials)}
    of_index = [position[tuple(sorted(i))] for i in itertools.product(range(dim), repeat=degree)]
    return monomials, torch.tensor(of_index, dtype=torch.int64)


class ProductBasis(ExactCoefficients, kernels.KernelSwitch):
    """Σ_ν W⁽ν⁾_Z · B⁽ν⁾ (ν = 1…correlation): species-weighted channel-wise products of A.

    B⁽¹⁾ = A and B⁽ν⁾ = CG(B⁽ν⁻¹⁾ ⊗ A) channel by channel (paths of :func:`product_paths`):
    a polynomial of degree ``correlation`` in A, i.e. body order correlation + 1.
    Output block k (irrep L) of channel c sums, over the blocks b of B⁽ν⁾ with irrep L,
    w⁽ν⁾[Z, b, c] B⁽ν⁾_b / √(#b).

    Every B⁽ν⁾ block is a fixed linear map of A^{⊗ν} (channel-independent coefficients,
    composed from the Clebsch–Gordan paths). A^{⊗ν} is symmetric, so the map acts on the
    distinct monomials μ = A_{j1}⋯A_{jν} (j1 ≤ … ≤ jν: 816 instead of 4096 for ν = 3 and
    A = 0e+1o+2e+3o), and of the highest degree only the monomials with a non-zero
    coefficient are formed (77 of 816 for scalar outputs). Per species z and channel c,

        out[M] = Σ_t S_z[t, c] · μ_{k_t}(A_c)      over the terms t = (monomial k_t, output M_t)
                                                   with a non-zero coefficient,
        S_z[t, c] = Σ_b w⁽ν⁾[z, b, c] U⁽ν⁾[b, t]   (ν the degree of k_t),

    one batched matmul over channels per species (torch path; the monomials formed once for
    all atoms, components first, so that each is a product of two gathered rows), or the CPU
    kernel :func:`eqcalc.nn.kernels.symmetric_polynomial` (``use_kernel``; inference and training),
    which forms them tile by tile in cache. :meth:`freeze` stores S for inference.
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
        self.dim_a = self.irreps_a.dim // self.channels
        self.out_dims = [ir.dim for _, ir in self.irreps_out]
        self.a_block_sizes = [mul * ir.dim for mul, ir in self.irreps_a]  # plain ints for forward
        self.weights = nn.ParameterList()
        lower, last, terms = [], [], []  # monomial k = monomial lower[k] · A_last[k] (k ≥ dim_a); terms
        self.degree_starts = []  # where each degree's monomials start (plain ints for forward)
        previous = [()]  # the monomials of the previous degree
        for order, (irreps_b, basis) in enumerate(self.bases(), start=1):
            monomials, monomial_of_index = symmetric_monomials(self.dim_a, order)
            symmetric = basis.new_zeros(len(basis), len(monomials)).index_add_(1, monomial_of_index, basis)
            b_slices = per_channel_slices(irreps_b)
            rows = []  # per output block k: its B blocks' coefficients / √#blocks, (#blocks, M_k · #monomials)
            for _, ir in self.irreps_out:
                blocks = [b for b, (_, ir_b) in enumerate(irreps_b) if ir_b == ir]
                if not blocks:
                    raise ValueError(f"ProductBasis: output irrep {ir} does not occur in B({order}) = {irreps_b}.")
                rows.append(torch.stack([symmetric[b_slices[b]].reshape(-1) for b in blocks]) / len(blocks) ** 0.5)
            # (rows, #monomials, M_total): output component M of monomial m, per B block (row)
            coefficients = torch.block_diag(*rows).view(-1, sum(self.out_dims), len(monomials)).transpose(1, 2)
            if order == self.correlation > 1:  # the highest degree: only the monomials that are used
                used = torch.nonzero(coefficients.abs().amax((0, 2)) > 1e-12).squeeze(1)
                coefficients, monomials = coefficients[:, used], [monomials[k] for k in used.tolist()]
            start = len(lower)
            if order == 1:  # the components of A themselves (no factors)
                lower += [0] * self.dim_a
                last += [0] * self.dim_a
            else:  # monomial = (a monomial of the previous degree) · A_last
                position = {m: self.degree_starts[-1] + k for k, m in enumerate(previous)}
                lower += [position[m[:-1]] for m in monomials]
                last += [m[-1] for m in monomials]
            self.degree_starts.append(start)
            nonzero = coefficients.abs().amax(0) > 1e-12  # (#monomials, M_total): the terms of this degree
            terms += [(start + k, m) for k, m in nonzero.nonzero().tolist()]
            self.register_coefficients(f"coefficients_{order}", coefficients[:, nonzero])
            self.weights.append(nn.Parameter(torch.randn(num_species, len(coefficients), self.channels)))
            previous = monomials
        self.num_monomials = len(lower)
        terms = torch.tensor(terms)
        self.register_buffer("lower_factor", torch.tensor(lower), persistent=False)
        self.register_buffer("last_factor", torch.tensor(last), persistent=False)
        self.register_buffer("kernel_terms", terms, persistent=False)
        # position of each term in a flattened (M_total, #monomials) coefficient matrix (torch path)
        self.register_buffer("term_index", terms[:, 1] * self.num_monomials + terms[:, 0], persistent=False)
        # (num_species, T, C) while frozen (a runtime buffer, never saved)
        self.register_buffer("frozen_species_weights", None, persistent=False)

    def bases(self) -> list[tuple[o3.Irreps, torch.Tensor]]:
        """Irreps of B⁽ν⁾ and its (per-channel dim, dim_a^ν) float64 coefficients in A^{⊗ν}
        (columns: (i1, …, iν) row-major), ν = 1…correlation."""
        a_slices = per_channel_slices(self.irreps_a)
        bases = [(self.irreps_a, torch.eye(self.dim_a, dtype=torch.float64))]
        for irreps_prev, irreps_next, instructions in self.steps:
            previous = bases[-1][1]
            prev_slices, next_slices = per_channel_slices(irreps_prev), per_channel_slices(irreps_next)
            basis = torch.zeros(irreps_next.dim // self.channels, previous.shape[1], self.dim_a, dtype=torch.float64)
            for i1, i2, i_out, *_ in instructions:
                ls = irreps_prev[i1].ir.l, self.irreps_a[i2].ir.l, irreps_next[i_out].ir.l
                product = torch.einsum("abm,aI->mIb", path_coefficients(*ls), previous[prev_slices[i1]])
                basis[next_slices[i_out], :, a_slices[i2]] = product
            bases.append((irreps_next, basis.reshape(basis.shape[0], -1)))
        return bases

    def species_weights(self) -> torch.Tensor:
        """S: (num_species, T, C), the coefficient of every term per species and channel."""
        if self.frozen_species_weights is not None:
            if any(w.requires_grad for w in self.weights):
                raise RuntimeError(
                    "ProductBasis: its weights need gradients but it is frozen; call freeze(False) "
                    "(model.freeze_weights(False)) before training."
                )
            return self.frozen_species_weights
        per_order = [
            torch.einsum("zbc,bt->ztc", self.weights[nu - 1], getattr(self, f"coefficients_{nu}"))
            for nu in range(1, self.correlation + 1)
        ]
        return torch.cat(per_order, dim=1)

    def freeze(self, enabled: bool) -> None:
        """Store S (inference: the weights no longer change and need no gradients), or go back
        to forming it from the weights on every call."""
        self.frozen_species_weights = None
        if enabled:
            if any(w.requires_grad for w in self.weights):
                raise RuntimeError(
                    "ProductBasis.freeze(True) needs weights without gradients (model.requires_grad_(False)): "
                    "frozen species weights would not train."
                )
            self.frozen_species_weights = self.species_weights().contiguous()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.frozen_species_weights is not None:  # formed again from the converted weights
            self.freeze(True)
        return self

    def monomials(self, a: torch.Tensor) -> torch.Tensor:
        """a (dim_a, …) -> (#monomials, …): A's monomials of degrees 1…correlation (of the
        highest degree ≥ 2 only those used), in the order of the kernel tables."""
        degrees = [a]
        bounds = self.degree_starts + [self.num_monomials]
        for previous_start, start, end in zip(bounds, bounds[1:], bounds[2:]):
            lower = degrees[-1].index_select(0, self.lower_factor[start:end] - previous_start)
            degrees.append(lower * a.index_select(0, self.last_factor[start:end]))
        return torch.cat(degrees, dim=0)

    def forward(
        self, atomic_basis: torch.Tensor, species: torch.Tensor, groups: SpeciesGroups | None = None
    ) -> torch.Tensor:
        """atomic_basis (N, irreps_a.dim), species (N,) -> (N, irreps_out.dim). ``groups``: the
        atoms grouped by species (made from ``species`` when not given)."""
        n, m_total = atomic_basis.shape[0], sum(self.out_dims)
        if groups is None:
            groups = SpeciesGroups.from_species(species, len(self.weights[0]))
        blocks = atomic_basis.index_select(0, groups.order).split(self.a_block_sizes, dim=1)
        a = torch.cat([b.reshape(n, self.channels, -1) for b in blocks], dim=2)  # (N, C, dim_a), species order
        weights = self.species_weights()
        if self.use_kernel and a.device.type == "cpu":
            sorted_out = kernels.symmetric_polynomial(
                a.transpose(1, 2).contiguous(), groups.offsets, weights, self.kernel_terms,
                self.lower_factor, self.last_factor, m_total,
            ).transpose(1, 2)  # (N, C, M_total)
        else:
            # (C, #monomials, N): components first, so that forming monomials gathers whole rows
            monomials = self.monomials(a.permute(2, 1, 0).contiguous()).transpose(0, 1)
            dense = weights.new_zeros(len(weights), self.channels, m_total * self.num_monomials)
            dense = dense.index_copy(2, self.term_index, weights.transpose(1, 2))
            by_species = [
                torch.bmm(dense[z].view(self.channels, m_total, -1), monomials_z)
                for z, monomials_z in enumerate(monomials.split(groups.counts, dim=2))
                if groups.counts[z]
            ]
            sorted_out = torch.cat(by_species, dim=2).permute(2, 0, 1)  # (N, C, M_total)
        out = torch.empty_like(sorted_out).index_copy(0, groups.order, sorted_out)
        return torch.cat([o.reshape(n, -1) for o in out.split(self.out_dims, dim=2)], dim=1)


class MACELayer(nn.Module):
    """h' = linear(ProductBasis(A(h))) + self_connection(h, Z).

    ``residual=False`` (mace-torch's RealAgnosticInteractionBlock): no self-connection; instead the
    channels of A are mixed per species before the product, A' = species_mix(A, Z), a fully
    connected tensor product with the species one-hot.
    """

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
        residual: bool = True,
    ):
        super().__init__()
        self.irreps_out = o3.Irreps(irreps_out)
        irreps_a = o3.Irreps([(num_channels, ir) for _, ir in irreps_sh])
        self.atomic_basis = EquivariantConvolution(
            irreps_in, irreps_sh, irreps_a, num_basis, radial_hidden, radial_layers
        )
        self.product_basis = ProductBasis(irreps_a, self.irreps_out, correlation, num_species)
        self.message = o3.Linear(self.irreps_out, self.irreps_out)
        species_irreps = f"{num_species}x0e"
        if residual:
            self.self_connection = FullyConnectedTensorProduct(irreps_in, species_irreps, self.irreps_out)
        else:
            self.species_mix = FullyConnectedTensorProduct(irreps_a, species_irreps, irreps_a)

    def forward(self, features, species, groups, species_one_hot, sh, radial, distances, slots, avg_num_neighbors: float):
        """features (N, irreps_in.dim) -> (N, irreps_out.dim); ``groups``: the
        :class:`SpeciesGroups` of ``species``."""
        atomic_basis = self.atomic_basis(features, sh, radial, distances, slots, avg_num_neighbors)
        if not hasattr(self, "self_connection"):
            return self.message(self.product_basis(self.species_mix(atomic_basis, species_one_hot), species, groups))
        message = self.message(self.product_basis(atomic_basis, species, groups))
        return message + self.self_connection(features, species_one_hot)


@register_family("mace")
class MACE(AtomisticModel):
    """MACE with Bessel × polynomial (p = 6 by default) radial basis.

    Args:
        num_channels: channels C of every feature (hidden irreps C×0e + C×1o + … up to max_L).
        max_L: largest l of the hidden node features (natural parity, 0e+1o+2e…).
        lmax: largest l of the edge spherical harmonics and of the atomic basis A (≥ max_L, ≤ 3).
        correlation: largest number ν of A factors in a product (body order ν + 1).
        num_layers: interaction layers; the last keeps only scalars.
        num_basis: number of Bessel functions.
        radial_hidden, radial_layers: width and depth of each layer's radial MLP.
        readout_hidden: width of the last layer's readout MLP.

    Options that reproduce mace-torch models exactly (:mod:`eqcalc.importers.mace`; the
    defaults are eqcalc's own architecture):
        envelope_p: order p of the polynomial cutoff envelope (mace-torch's num_polynomial_cutoff).
        trainable_basis: whether the Bessel frequencies train (False: fixed, as in mace-torch).
        first_layer_residual: False: the first layer has no self-connection and mixes the channels
            of its atomic basis per species instead (mace-torch's RealAgnosticInteractionBlock).
        readout_bias: whether the last readout MLP has biases (mace-torch's has none).
        pair_repulsion: add the ZBL pair repulsion E_i = ½ Σ_j V_ZBL(r_ij)
            (:class:`~eqcalc.nn.pair_repulsion.ZBLRepulsion`, envelope order ``envelope_p``) to
            each atom's raw output, so that it is scaled by ``energy_scale`` with the rest, as
            mace-torch's ScaleShiftMACE does; local (one hop).
        distance_transform: None, or "agnesi": the Bessel basis reads the Agnesi transform of
            each distance (:class:`~eqcalc.nn.distance_transforms.AgnesiTransform`, depends on
            both species); the radial MLPs are then not tabulated for the CPU kernels.
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
        envelope_p: int = 6,
        trainable_basis: bool = True,
        first_layer_residual: bool = True,
        readout_bias: bool = True,
        pair_repulsion: bool = False,
        distance_transform: str | None = None,
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
        self.envelope_p = int(envelope_p)
        self.trainable_basis = bool(trainable_basis)
        self.first_layer_residual = bool(first_layer_residual)
        self.readout_bias = bool(readout_bias)
        self.pair_repulsion = bool(pair_repulsion)
        self.distance_transform = distance_transform
        if self.envelope_p < 1:
            raise ValueError(f"mace needs envelope_p ≥ 1, got {envelope_p}.")
        if distance_transform is not None and distance_transform not in TRANSFORMS:
            raise ValueError(
                f"mace needs distance_transform None or one of {list(TRANSFORMS)}, got {distance_transform!r}."
            )

        self.embedding = nn.Embedding(self.num_species, self.num_channels)
        self.edge_embedding = EdgeEmbedding(
            self.cutoff, self.lmax, self.num_basis, self.envelope_p, self.trainable_basis,
            build_distance_transform(self.distance_transform, self.species),
        )
        self.repulsion = ZBLRepulsion(self.species, self.envelope_p) if self.pair_repulsion else None
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
                    residual=self.first_layer_residual or t > 0,
                )
            )
            irreps = irreps_out
        self.layers = nn.ModuleList(layers)
        self.readouts = nn.ModuleList(
            [o3.Linear(layer.irreps_out, "1x0e") for layer in self.layers[:-1]]
            + [mlp([self.num_channels, self.readout_hidden, 1], nn.SiLU, bias=self.readout_bias)]
        )

    def freeze_weights(self, enabled: bool) -> None:
        super().freeze_weights(enabled)
        for layer in self.layers:
            layer.product_basis.freeze(enabled)

    @property
    def feature_irreps(self) -> list[o3.Irreps]:
        """Irreps of the node features after each layer (see :meth:`node_features`)."""
        return [layer.irreps_out for layer in self.layers]

    def index_tables(self, species, edge_index, edge_vectors) -> tuple[NeighbourSlots, SpeciesGroups]:
        slots = NeighbourSlots.from_edges(edge_index, species.shape[0], edge_vectors)
        return slots, SpeciesGroups.from_species(species, self.num_species)

    def node_features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        tables: tuple[NeighbourSlots, SpeciesGroups] | None = None,
    ) -> list[torch.Tensor]:
        """Node features after each layer: list of (N, feature_irreps[t].dim) tensors.

        Arguments as for :meth:`atomic_outputs`.
        """
        slots, groups = self.index_tables(species, edge_index, edge_vectors) if tables is None else tables
        radial, sh, distances = self.edge_embedding(edge_vectors, slots, species, edge_index)
        one_hot = nn.functional.one_hot(species, self.num_species).to(radial.dtype)
        features = self.embedding(species)
        outputs = []
        for layer in self.layers:
            (features,) = self.ghost_exchange(features)
            features = layer(features, species, groups, one_hot, sh, radial, distances, slots, self.avg_num_neighbors)
            outputs.append(features)
        return outputs

    @property
    def message_passing_hops(self) -> int:
        return self.num_layers

    def readout_layers(self) -> list[nn.Module]:
        return [*self.readouts[:-1], self.readouts[-1][-1]]

    @property
    def feature_sizes(self) -> tuple[int, int]:
        """The last layer's scalars and the 1o channels of every earlier layer (the last keeps only
        scalars; none with max_L 0 or one layer)."""
        num_vectors = sum(irrep_multiplicity(irreps, "1o") for irreps in self.feature_irreps)
        if not num_vectors:
            raise self._without_vector_features()
        return self.num_channels, num_vectors

    def atomic_features(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        features = self.node_features(species, edge_index, edge_vectors, tables)
        vectors = torch.cat([irrep_channels(h, irreps, "1o") for h, irreps in zip(features, self.feature_irreps)], 2)
        return self._energy_outputs(features, species, edge_index, edge_vectors), AtomFeatures(features[-1], vectors)

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        features = self.node_features(species, edge_index, edge_vectors, tables)
        return self._energy_outputs(features, species, edge_index, edge_vectors)

    def _energy_outputs(self, features: list[torch.Tensor], species, edge_index, edge_vectors) -> torch.Tensor:
        """The raw per-atom energy (N,): every layer's readout of its features (:meth:`node_features`)."""
        outputs = sum(readout(h) for readout, h in zip(self.readouts, features)).squeeze(-1)
        if self.repulsion is not None:
            outputs = outputs + self.repulsion(species, edge_index, edge_vectors)
        return outputs
