"""Clebsch–Gordan tensor products of the edge convolution as a few dense contractions.

Same mathematics as e3nn's :class:`~e3nn.o3.TensorProduct` in "uvu" mode with the
edge spherical harmonics and per-edge weights (NequIP and MACE convolutions),
evaluated on the per-atom neighbour-slot table
(:class:`~eqcalc.nn.neighbour_slots.NeighbourSlots`) so that the sum over
neighbours is a batched matmul and no (E, C, 2l+1) per-edge message is formed.

Every path k = (l1 ⊗ l2 → l) contributes √(2l+1) · C^{l1 l2 l} (e3nn's
"component" irrep normalisation with "element" path normalisation, each path
writing its own output block). Coefficients are kept exact in every dtype: they
are recomputed from float64 after each ``.to()``.

Feature layout is e3nn's: a block ``C x l`` occupies C·(2l+1) consecutive
entries, channel-major (index c·(2l+1) + m).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from e3nn import o3
from torch import nn

from . import kernels
from .neighbour_slots import NeighbourSlots


class Path(NamedTuple):
    """One coupling path: input blocks i_in1 ⊗ i_in2 → output block i_out."""

    i_in1: int
    i_in2: int
    i_out: int


class ExactCoefficients(nn.Module):
    """Holds non-persistent coefficient buffers recomputed from float64 masters on every
    ``.to()`` / ``.double()``, so a float32 → float64 round trip keeps them exact."""

    def __init__(self):
        super().__init__()
        self._masters: dict[str, torch.Tensor] = {}

    def register_coefficients(self, name: str, exact: torch.Tensor) -> None:
        self._masters[name] = exact.to(torch.float64)
        self.register_buffer(name, exact.to(torch.get_default_dtype()), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name, exact in self._masters.items():
            current = getattr(self, name)
            setattr(self, name, exact.to(device=current.device, dtype=current.dtype))
        return self


def path_coefficients(l1: int, l2: int, l_out: int) -> torch.Tensor:
    """√(2l+1) · C^{l1 l2 l} (e3nn's unit-norm Wigner 3j), float64, shape (2l1+1, 2l2+1, 2l+1)."""
    return (2 * l_out + 1) ** 0.5 * o3.wigner_3j(l1, l2, l_out, dtype=torch.float64)


class ConvolutionProduct(ExactCoefficients):
    """m_i = Σ_j TP(x_j, Y_ij; w_ij) over "uvu" paths, on the neighbour-slot table.

    Equal to ``scatter_sum(o3.TensorProduct(irreps_in, irreps_sh, irreps_out, [(i1, i2, k,
    "uvu", True) for paths], shared_weights=False)(x[j], Y, w), i, N)``, computed per
    path k = (l1 ⊗ l2 → l) as

        u_{n,s}[m1, c] = w_{n,s}[k, c] x_{j(n,s)}[m1, c]                    (N, D·d1, C)
        m_n[m, c] = Σ_{s, m1} K_{n,s}[m1, m] u_{n,s}[m1, c],   K = Y_l2 · √(2l+1) C^{l1 l2 l}

    (one batched matmul over the slots s of each atom n). Padding slots must carry zero weights.

    Args:
        irreps_in: node feature irreps (first input), one multiplicity C for every block.
        irreps_sh: spherical-harmonic irreps, multiplicity 1 each (second input).
        paths: (i_in1, i_in2, i_out), one output block per path, in output order.
        irreps_out: output irreps (multiplicity C).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, paths: list[Path], irreps_out: o3.Irreps):
        super().__init__()
        self.irreps_in1, self.irreps_in2 = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        self.irreps_out = o3.Irreps(irreps_out)
        self.paths = [Path(*p[:3]) for p in paths]
        channels = {mul for mul, _ in self.irreps_in1 + self.irreps_out}
        if len(channels) != 1:
            raise ValueError(f"ConvolutionProduct needs one multiplicity throughout, got {irreps_in} → {irreps_out}.")
        self.channels = channels.pop()
        if any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(f"ConvolutionProduct needs multiplicity 1 in the second input, got {irreps_sh}.")
        if [p.i_out for p in self.paths] != list(range(len(self.irreps_out))):
            raise ValueError("ConvolutionProduct needs one output block per path, in path order.")
        for k, (i1, i2, i_out) in enumerate(self.paths):
            ir1, ir2, ir_out = self.irreps_in1[i1].ir, self.irreps_in2[i2].ir, self.irreps_out[i_out].ir
            coefficients = path_coefficients(ir1.l, ir2.l, ir_out.l).permute(1, 0, 2)  # (d2, d1, d)
            self.register_coefficients(f"coefficients_{k}", coefficients.reshape(ir2.dim, -1))
        # plain ints for forward (torch.compile cannot guard on e3nn Irreps objects)
        self.block_sizes_in1 = [self.channels * ir.dim for _, ir in self.irreps_in1]
        self.block_sizes_in2 = [ir.dim for _, ir in self.irreps_in2]
        self.path_dims = [(self.irreps_in1[p.i_in1].ir.dim, self.irreps_out[p.i_out].ir.dim) for p in self.paths]
        self.used_in1 = sorted({p.i_in1 for p in self.paths})
        self._register_kernel_tables()

    def _register_kernel_tables(self) -> None:
        """The path table and flat coefficients of :func:`eqcalc.nn.kernels.uvu_convolution`."""
        d1_of = {i1: self.block_sizes_in1[i1] // self.channels for i1 in self.used_in1}
        in_offset = {i1: sum(d1_of[u] for u in self.used_in1[:k]) for k, i1 in enumerate(self.used_in1)}
        rows, coefficients, out_offset, cg_offset = [], [], 0, 0
        for k, ((i1, i2, _), (d1, d_out)) in enumerate(zip(self.paths, self.path_dims)):
            d2 = self.block_sizes_in2[i2]
            rows.append([in_offset[i1], d1, sum(self.block_sizes_in2[:i2]), d2, out_offset, d_out, cg_offset])
            coefficients.append(self._masters[f"coefficients_{k}"].reshape(-1))
            out_offset, cg_offset = out_offset + d_out, cg_offset + d2 * d1 * d_out
        self.register_buffer("kernel_paths", torch.tensor(rows, dtype=torch.int64), persistent=False)
        self.register_coefficients("kernel_coefficients", torch.cat(coefficients))
        self.kernel_out_blocks = out_offset

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def forward(
        self, features: torch.Tensor, sh: torch.Tensor, weights: list[torch.Tensor], slots: NeighbourSlots
    ) -> torch.Tensor:
        """features (N, irreps_in.dim); per neighbour slot of ``slots``: sh (N·D, irreps_sh.dim),
        weights one (N·D, C) tensor per path -> (N, irreps_out.dim)."""
        return self.aggregate(self.sources(features), sh, weights, slots)

    def _source_blocks(self, features: torch.Tensor) -> dict[int, torch.Tensor]:
        """The input blocks the paths read, each as an (N, d1, C) view of ``features``."""
        blocks = features.split(self.block_sizes_in1, dim=1)
        return {
            i1: blocks[i1].reshape(-1, self.channels, self.block_sizes_in1[i1] // self.channels).transpose(1, 2)
            for i1 in self.used_in1
        }

    def sources(self, features: torch.Tensor) -> dict[int, torch.Tensor]:
        """The input blocks the paths read, each as (N, d1, C) contiguous: the layout the
        neighbour gather of :meth:`aggregate` reads (made once, shared by blocks of centre atoms)."""
        return {i1: block.contiguous() for i1, block in self._source_blocks(features).items()}

    def stacked_sources(self, features: torch.Tensor) -> torch.Tensor:
        """The input blocks the paths read, stacked m-major: (N, B_in, C), the x of :meth:`kernel`'s
        operator (the offsets of its path table)."""
        return torch.cat(list(self._source_blocks(features).values()), dim=1)

    def kernel(
        self, features: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor, slots: NeighbourSlots
    ) -> torch.Tensor:
        """:meth:`forward` through the CPU kernel (:func:`eqcalc.nn.kernels.uvu_convolution`, which
        must be :func:`~eqcalc.nn.kernels.available`): weights (R, num_paths · C) per pair of reverse
        slots and a padding row when ``slots.paired``, else per slot -> (N, irreps_out.dim)."""
        if slots.paired:
            row, slots_of_pair = slots.pair_of_slot, slots.slots_of_pair
        else:  # the rows of the weights are the slots
            row, slots_of_pair = slots.neighbour_of_slot.new_empty(0), slots.neighbour_of_slot.new_empty((0, 2))
        out = kernels.uvu_convolution(
            self.stacked_sources(features), sh.contiguous(), weights.reshape(weights.shape[0], self.num_paths, self.channels),
            slots.neighbour_of_slot, row, slots.num_neighbours, self.kernel_paths, self.kernel_coefficients,
            slots_of_pair, self.kernel_out_blocks,
        )  # (N, B_out, C), path blocks m-major
        blocks = out.split([d_out for _, d_out in self.path_dims], dim=1)
        return torch.cat([block.transpose(1, 2).reshape(slots.num_nodes, -1) for block in blocks], dim=1)

    def aggregate(
        self, sources: dict[int, torch.Tensor], sh: torch.Tensor, weights: list[torch.Tensor], slots: NeighbourSlots
    ) -> torch.Tensor:
        """:meth:`forward` from :meth:`sources` of all N atoms, for the centre atoms of ``slots``
        (which may be :meth:`NeighbourSlots.rows` of a larger table): -> (n, irreps_out.dim)."""
        n, width, channels = slots.num_nodes, slots.width, self.channels
        sh_blocks = sh.split(self.block_sizes_in2, dim=1)
        gathered = {}  # input block -> (n, D, d1, C) neighbour features
        outputs = []
        for k, ((i1, i2, _), (d1, d_out), w) in enumerate(zip(self.paths, self.path_dims, weights)):
            if i1 not in gathered:
                gathered[i1] = sources[i1].index_select(0, slots.neighbour_of_slot).view(n, width, d1, channels)
            # an explicit expand of a contiguous w is several times faster than implicit broadcasting
            shape = (n, width, d1, channels)
            u = (w.view(n, width, 1, channels).expand(shape) * gathered[i1]).view(n, width * d1, channels)
            coupling = sh_blocks[i2] @ getattr(self, f"coefficients_{k}")  # (n·D, d1·d)
            message = torch.bmm(coupling.view(n, width * d1, d_out).transpose(1, 2), u)  # (n, d, C)
            outputs.append(message.transpose(1, 2).reshape(n, channels * d_out))
        return torch.cat(outputs, dim=1)
