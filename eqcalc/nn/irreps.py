"""O(3)-irreps building blocks shared by the NequIP and MACE families.

Features are e3nn tensors: an :class:`e3nn.o3.Irreps` such as ``32x0e+32x1o``
says how each slice of the last dimension transforms under a rotation or
reflection R (Wigner-D blocks ``irreps.D_from_matrix(R)``; odd-parity blocks
also flip sign under inversion). Every module here maps equivariant inputs to
equivariant outputs; radial inputs are invariant.

Coupling two irreps l1 p1 ⊗ l2 p2 gives the irreps l p with
|l1 − l2| ≤ l ≤ l1 + l2 and p = p1 p2 (Clebsch–Gordan selection rules);
:func:`coupling_paths` enumerates those paths.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Collection

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import kernels
from .activations import mlp
from .cutoffs import PolynomialCutoff
from .radial import BesselBasis, RadialSpline
from .neighbour_slots import NeighbourSlots
from .tensor_product import ConvolutionProduct

Instruction = tuple[int, int, int, str, bool]

_WIGNER_3J_BUFFER = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)")


def feature_irreps(multiplicity: int, lmax: int, parity: bool = True) -> o3.Irreps:
    """``multiplicity`` copies of each irrep with l ≤ lmax.

    parity=True: both parities of every l (0e+0o+1o+1e+2e+2o…, natural parity
    (−1)^l first); parity=False: only the natural parity (0e+1o+2e…).
    """
    if multiplicity < 1 or lmax < 0:
        raise ValueError(f"Need multiplicity ≥ 1 and lmax ≥ 0, got {multiplicity} and {lmax}.")
    irreps = []
    for l in range(lmax + 1):
        natural = (-1) ** l
        for p in (natural, -natural) if parity else (natural,):
            irreps.append((multiplicity, (l, p)))
    return o3.Irreps(irreps)


def irrep_channels(features: torch.Tensor, irreps: o3.Irreps, irrep: str) -> torch.Tensor:
    """Every channel of one irrep in ``features`` (N, irreps.dim): (N, 2l + 1, total multiplicity),
    the blocks of that irrep concatenated in order (e3nn's layout: channel-major within a block).
    For "1o" the components are Cartesian (x, y, z): e3nn's l = 1 Wigner matrix is the rotation itself."""
    target = o3.Irrep(irrep)
    blocks = [
        features[:, block].reshape(features.shape[0], mul, target.dim).transpose(1, 2)
        for (mul, ir), block in zip(irreps, irreps.slices())
        if ir == target
    ]
    if not blocks:
        return features.new_zeros((features.shape[0], target.dim, 0))
    return torch.cat(blocks, dim=2)


def irrep_multiplicity(irreps: o3.Irreps, irrep: str) -> int:
    """Total multiplicity of one irrep in ``irreps``."""
    return sum(mul for mul, ir in irreps if ir == o3.Irrep(irrep))


def irreps_up_to(lmax: int) -> set[o3.Irrep]:
    """Every irrep with l ≤ lmax, both parities."""
    return {o3.Irrep(l, p) for l in range(lmax + 1) for p in (1, -1)}


def coupling_paths(
    irreps_in1: o3.Irreps,
    irreps_in2: o3.Irreps,
    allowed: Collection[o3.Irrep],
    mode: str,
    weighted: bool,
    symmetric: bool = False,
) -> tuple[o3.Irreps, list[Instruction]]:
    """Tensor-product paths (i1, i2) → l p obeying the selection rules, with l p in ``allowed``.

    Each path writes its own output block of multiplicity ``irreps_in1[i1].mul``
    (modes "uvu" and "uuu"), so a later linear layer can weight paths separately.
    weighted: whether the paths take weights (e3nn ``has_weight``).

    symmetric: the two inputs are the same tensor (A ⊗ A, "uuu"); keep i1 ≤ i2
    only and drop the paths that vanish identically (i1 = i2 with odd l, whose
    Clebsch–Gordan coefficients are antisymmetric in the two factors).

    Returns the output irreps and e3nn instructions (i1, i2, i_out, mode, has_weight).
    """
    irreps_out = []
    instructions: list[Instruction] = []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            if symmetric and i2 < i1:
                continue
            for ir_out in ir1 * ir2:
                if ir_out not in allowed or (symmetric and i1 == i2 and ir_out.l % 2 == 1):
                    continue
                instructions.append((i1, i2, len(irreps_out), mode, weighted))
                irreps_out.append((mul, ir_out))
    return o3.Irreps(irreps_out), instructions


def reachable(target: o3.Irreps, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps) -> o3.Irreps:
    """The entries of ``target`` whose irrep some product ir1 ⊗ ir2 of the inputs contains."""
    products = {ir for _, ir1 in irreps_in1 for _, ir2 in irreps_in2 for ir in ir1 * ir2}
    return o3.Irreps([(mul, ir) for mul, ir in target if ir in products])


def radial_mlp(num_basis: int, hidden: int, num_layers: int, num_out: int) -> nn.Sequential:
    """Bias-free SiLU network num_basis → hidden (× num_layers) → num_out.

    Without biases a zero input (an edge at the cutoff, where the enveloped
    basis vanishes) gives zero output, so tensor-product weights go smoothly to
    zero there. Weights start with variance 1/fan_in so outputs are O(1), the
    scale e3nn's normalised tensor products expect.
    """
    network = mlp([num_basis] + [hidden] * num_layers + [num_out], nn.SiLU, bias=False)
    for layer in network:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
    return network


class ExactClebschGordan(nn.Module):
    """Mixin for e3nn tensor products: keeps their Clebsch–Gordan coefficients exact
    in whatever dtype the module is moved to.

    e3nn stores the coefficients as buffers (``…._w3j_l1_l2_l3``) computed in the
    default dtype at construction, usually float32. Casting to float64 afterwards
    would keep float32-rounded values, which breaks equivariance at the 1e-8
    level; after every ``.to()`` / ``.double()`` they are recomputed instead.
    """

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        with torch.no_grad():
            for name, buffer in self.named_buffers():
                match = _WIGNER_3J_BUFFER.fullmatch(name.rsplit(".", 1)[-1])
                if match:
                    exact = o3.wigner_3j(*(int(l) for l in match.groups()), dtype=torch.float64)
                    buffer.copy_(exact.to(device=buffer.device, dtype=buffer.dtype))
        return self


class TensorProduct(ExactClebschGordan, o3.TensorProduct):
    """:class:`e3nn.o3.TensorProduct` with exact coefficients in every dtype."""


class FullyConnectedTensorProduct(ExactClebschGordan, o3.FullyConnectedTensorProduct):
    """:class:`e3nn.o3.FullyConnectedTensorProduct` with exact coefficients in every dtype."""


MAX_BLOCKS = 16  # blocks per blocked convolution: each block's backward touches every atom's features


class EdgeEmbedding(nn.Module):
    """Edge vectors → invariant radial basis and equivariant spherical harmonics.

    radial: Bessel basis (frequencies trainable unless ``trainable_basis`` is False) ×
    polynomial envelope of order ``envelope_p`` (default 6),
    zero from r_c on, one row per pair of reverse edges when the slots are paired
    (:attr:`NeighbourSlots.pair_of_slot`), else per slot; sh: Y_lm(r̂) for
    l ≤ lmax per slot, "component" normalised (|Y_l|² = 2l + 1), irreps
    0e+1o+2e+…. Padding slots (and the padding pair) get a vector of length
    2 r_c, so their radial basis (and every radial weight, the radial MLPs being
    bias-free) is exactly zero.

    ``distance_transform`` (a module t(r, species_i, species_j), e.g.
    :class:`~eqcalc.nn.distance_transforms.AgnesiTransform`): the Bessel basis reads t(r_ij)
    instead of r_ij (the envelope still reads r_ij), so the radial basis depends on the species
    of both ends and :meth:`forward` needs them; such radial functions are not tabulated
    (:meth:`EquivariantConvolution.tabulate`).
    """

    def __init__(
        self,
        cutoff: float,
        lmax: int,
        num_basis: int = 8,
        envelope_p: int = 6,
        trainable_basis: bool = True,
        distance_transform: nn.Module | None = None,
    ):
        super().__init__()
        self.cutoff = float(cutoff)
        self.basis = BesselBasis(cutoff, num_basis, trainable=trainable_basis)
        self.envelope = PolynomialCutoff(cutoff, p=envelope_p)
        self.distance_transform = distance_transform
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.sh_degrees = list(range(lmax + 1))  # plain ints in forward: torch.compile cannot guard on Irreps

    def forward(
        self,
        edge_vectors: torch.Tensor,
        slots: NeighbourSlots,
        species: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """edge_vectors (E, 3) Å -> radial (P + 1 or N·D, num_basis), sh (N·D, irreps_sh.dim),
        and the distances (P + 1 or N·D,) Å of the radial rows. ``species`` (N,) int64 and
        ``edge_index`` (2, E): needed (only) with a distance transform."""
        outside = edge_vectors.new_tensor([[2.0 * self.cutoff, 0.0, 0.0]])
        vectors = slots.pad(edge_vectors, outside)
        if slots.paired:
            radial_vectors = torch.cat([edge_vectors.index_select(0, slots.edge_of_pair), outside])
        else:
            radial_vectors = vectors
        distances = torch.linalg.vector_norm(radial_vectors, dim=-1)
        sh = o3.spherical_harmonics(self.sh_degrees, vectors, normalize=True, normalization="component")
        if self.distance_transform is None:
            return self.radial_basis(distances), sh, distances
        if species is None or edge_index is None:
            raise ValueError("EdgeEmbedding with a distance transform needs the species and edge_index of the edges.")
        if slots.paired:  # the ends of each pair's first edge; species 0 for the padding pair (zero envelope)
            ends = torch.cat([edge_index.index_select(1, slots.edge_of_pair), edge_index.new_zeros(2, 1)], dim=1)
            species_i, species_j = species.index_select(0, ends[0]), species.index_select(0, ends[1])
        else:  # slot n·D + k: centre n, its k-th neighbour (padding: a zero envelope)
            centres = torch.arange(slots.num_nodes, device=species.device).repeat_interleave(slots.width)
            species_i, species_j = species.index_select(0, centres), species.index_select(0, slots.neighbour_of_slot)
        return self.radial_basis(distances, species_i, species_j), sh, distances

    def radial_basis(
        self, distances: torch.Tensor, species_i: torch.Tensor | None = None, species_j: torch.Tensor | None = None
    ) -> torch.Tensor:
        """distances (R,) Å -> (R, num_basis): Bessel basis (of the transformed distance, given
        the species (R,) of both ends, with a distance transform) × envelope."""
        basis_input = distances if self.distance_transform is None else self.distance_transform(
            distances, species_i, species_j
        )
        return self.basis(basis_input) * self.envelope(distances)[:, None]


class EquivariantConvolution(nn.Module, kernels.KernelSwitch):
    """Point convolution h_i → linear_out(Σ_j TP(linear_in(h)_j, Y(r̂_ij); W(d_ij)) / ⟨n⟩).

    The tensor product is "uvu" (channel-wise in the node features) over every
    path allowed by the selection rules whose output irrep occurs in
    ``irreps_out``; its weights come per edge from one radial MLP, whose last
    layer gives C weights per path.

    Args:
        irreps_in: node feature irreps (one multiplicity C for all blocks).
        irreps_sh: spherical-harmonic irreps of the edges.
        irreps_out: irreps of the result.
        num_basis: size of the radial basis.
        radial_hidden, radial_layers: width and depth of the radial MLP.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_out: o3.Irreps,
        num_basis: int,
        radial_hidden: int,
        radial_layers: int,
    ):
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        irreps_mid, instructions = coupling_paths(
            self.irreps_in, irreps_sh, {ir for _, ir in self.irreps_out}, mode="uvu", weighted=True
        )
        self.linear_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.tensor_product = ConvolutionProduct(self.irreps_in, irreps_sh, instructions, irreps_mid)
        num_weights = self.tensor_product.num_paths * self.tensor_product.channels
        self.radial = radial_mlp(num_basis, radial_hidden, radial_layers, num_weights)
        self.linear_out = o3.Linear(irreps_mid, self.irreps_out)
        self.block_slots: int | None = None  # neighbour slots per block of centre atoms (None: one pass)
        self.radial_spline: RadialSpline | None = None  # the radial MLP tabulated, for the kernel path

    def tabulate(self, embedding: EdgeEmbedding | None) -> None:
        """Tabulate the radial MLP as a function of the distance, R(r) = MLP(embedding's radial
        basis at r), for the kernel path (inference: the weights must not change afterwards);
        None removes the table. The table is built from float64 copies: within 1e-11 of the MLP
        (relative to its largest value) for float64 models, 1e-7 for float32 ones. An embedding
        with a distance transform (a radial basis of the distance and both species) gets no
        table: the kernel path then evaluates the radial MLP per pair."""
        self.radial_spline = None
        if embedding is None or embedding.distance_transform is not None:
            return
        exact_basis = copy.deepcopy(embedding).to("cpu", torch.float64)
        exact_mlp = copy.deepcopy(self.radial).to("cpu", torch.float64)
        weight = self.radial[0].weight
        self.radial_spline = RadialSpline(
            lambda r: exact_mlp(exact_basis.radial_basis(r)), embedding.cutoff, weight.dtype, weight.device,
            tolerance=1e-11 if weight.dtype == torch.float64 else 1e-7,
        )

    def path_weights(self, radial: torch.Tensor) -> list[torch.Tensor]:
        """radial (R, num_basis) -> num_paths tensors (R, C): the radial MLP, its last layer
        split by path so each path's weights are contiguous (R rows: pairs or slots)."""
        hidden = radial
        for layer in self.radial[:-1]:
            hidden = layer(hidden)
        last = self.radial[-1].weight  # (num_paths · C, hidden)
        return [hidden @ block.t() for block in last.split(self.tensor_product.channels)]

    def forward(
        self,
        features: torch.Tensor,
        sh: torch.Tensor,
        radial: torch.Tensor,
        distances: torch.Tensor,
        slots: NeighbourSlots,
        avg_num_neighbors: float,
    ) -> torch.Tensor:
        """features (N, irreps_in.dim); sh (N·D, irreps_sh.dim) per neighbour slot, radial
        (P + 1 or N·D, num_basis) and distances (P + 1 or N·D,) per pair or slot
        (:class:`EdgeEmbedding`) -> (N, irreps_out.dim).

        With ``use_kernel`` (CPU tensors), the tensor product and the sum over neighbours run in
        the CPU kernel (:mod:`eqcalc.nn.kernels`), which forms no per-slot tensor beyond its
        inputs (sh, the radial weights): one pass, whatever ``block_slots``; differentiable to
        any order (training on forces runs on it). The radial weights then come from the distances through the tabulated MLP
        where :meth:`tabulate` made one, else from the MLP.

        Else, with ``block_slots`` set, the per-slot work (radial MLP, tensor product, sum over
        neighbours) runs for blocks of centre atoms of about that many slots (at most
        MAX_BLOCKS blocks), each block recomputed during the backward pass instead of kept
        (activation checkpointing): the same values and gradients, with the per-slot
        intermediates of one block instead of every edge, for about one extra forward pass of
        the convolution. The per-slot inputs (sh, radial) stay whole.
        """
        if self.use_kernel and features.device.type == "cpu":
            if self.radial_spline is None:
                weights = self.radial(radial)
            elif torch.is_grad_enabled() and self.radial[0].weight.requires_grad:
                raise RuntimeError(
                    "EquivariantConvolution: its radial MLP needs gradients but is tabulated; call "
                    "model.freeze_weights(False) before training."
                )
            else:
                weights = self.radial_spline(distances)
            aggregated = self.tensor_product.kernel(self.linear_in(features), sh, weights, slots)
            return self.linear_out(aggregated / avg_num_neighbors)
        sources = self.tensor_product.sources(self.linear_in(features))  # every block gathers from all atoms
        if self.block_slots is None or slots.num_nodes * slots.width <= self.block_slots:
            aggregated = self._aggregate(sources, sh, radial, slots)
        else:
            if slots.paired:  # blocks take per-slot rows (the radial MLP runs inside each block)
                radial = slots.from_pairs(radial)
            atoms_per_block = max(self.block_slots // slots.width, -(-slots.num_nodes // MAX_BLOCKS), 1)
            rows = atoms_per_block * slots.width
            blocks = []
            for index, (sh_rows, radial_rows) in enumerate(zip(sh.split(rows), radial.split(rows))):
                start = index * atoms_per_block
                block = slots.rows(start, min(start + atoms_per_block, slots.num_nodes))
                if torch.is_grad_enabled():
                    blocks.append(checkpoint(
                        self._aggregate, sources, sh_rows, radial_rows, block, use_reentrant=False, preserve_rng_state=False
                    ))
                else:
                    blocks.append(self._aggregate(sources, sh_rows, radial_rows, block))
            aggregated = torch.cat(blocks)
        return self.linear_out(aggregated / avg_num_neighbors)

    def _aggregate(self, sources: dict[int, torch.Tensor], sh, radial, slots: NeighbourSlots) -> torch.Tensor:
        """Σ_j TP(features_j, Y_ij; W(d_ij)) for the centre atoms of ``slots``: (n, irreps_mid.dim)."""
        weights = self.path_weights(radial)
        if slots.paired:
            weights = [slots.from_pairs(w) for w in weights]
        return self.tensor_product.aggregate(sources, sh, weights, slots)


def gated_nonlinearity(irreps: o3.Irreps) -> e3nn_nn.Gate:
    """A gate whose output has ``irreps`` (scalars listed first).

    Even scalars get SiLU, odd scalars tanh (odd function, keeps parity); each
    l > 0 channel is multiplied by the sigmoid of its own extra 0e gate scalar.
    The gate's input irreps (``gate.irreps_in``) are scalars + gates + gated.
    """
    irreps = o3.Irreps(irreps)
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l > 0])
    if scalars + gated != irreps:
        raise ValueError(f"Gated irreps must list their scalars first, got {irreps}.")
    gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
    return e3nn_nn.Gate(
        scalars,
        [nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars],
        gates,
        [torch.sigmoid] * len(gates),
        gated,
    )
