"""Allegro: strictly local equivariant edge features (Musaelian et al., Nat. Commun. 2023).

Every feature lives on an ordered pair (edge) ij of a centre atom i and a neighbour j within r_c;
nothing passes between atoms. With u(r) the polynomial envelope, B(r) the Bessel basis × u,
Y(r̂) the spherical harmonics (l ≤ lmax) and one-hot species Z:

    x⁰_ij = u(r_ij) · MLP₂(Z_i ‖ Z_j ‖ B(r_ij))                      scalar latent, (F,)
    V⁰_ij = w⁰(x⁰_ij) Y(r̂_ij)                                       C channels per l

and, for layers t = 1…T,

    Γᵗ_i   = Σ_k wᵗ(x^{t−1}_ik) Y(r̂_ik) / √⟨n⟩                     environment of centre i
    Tᵗ_ij  = V^{t−1}_ij ⊗ Γᵗ_i                                      channel-wise Clebsch–Gordan
    xᵗ_ij  = (x^{t−1}_ij + u(r_ij) · MLPᵗ(x^{t−1}_ij ‖ scalars(Tᵗ_ij))) / √2
    Vᵗ_ij  = Linearᵗ(Tᵗ_ij)                                         (not formed after the last layer)

where w(x) are bias-free linear maps giving one weight per channel and l, the sum over k runs over
every edge of centre i (j included), and scalars(T) are the even scalars (0e) of the product. The
output is

    e_i = Σ_j u(r_ij) · MLP_E(x^T_ij) / ⟨n⟩,

which the base class turns into E_i = scale · e_i + shift[Z_i] (eV). Every term of atom i depends
only on the edges of i, so its energy depends only on the atoms within r_c of it
(:attr:`Allegro.message_passing_hops` is 1): a halo or a LAMMPS ghost shell of r_c (+ skin) is
exact. Every edge term carries a factor u, so energies and forces go smoothly to zero as an atom
leaves the cutoff sphere.

Shapes: per-edge tensors have one row per edge (E rows, in the order of ``edge_index``): x is
(E, F), V (E, irreps.dim); Γ is (N, C·(lmax + 1)²), summed over each centre's edges. Time and
memory grow with the number of edges: an atom without edges of its own (a LAMMPS ghost, a halo
atom) costs one row of Γ.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
from e3nn import o3
from torch import nn

from ..nn.activations import mlp
from ..nn.irreps import EdgeEmbedding, TensorProduct, coupling_paths, feature_irreps
from .base import AtomisticModel
from .registry import register_family

EVEN_SCALAR = o3.Irrep("0e")


class EdgeFeatures(NamedTuple):
    """Allegro's features of every edge (E rows, in the order of ``edge_index``).

    Attributes:
        latent: (E, F) the final scalar latent x^T.
        tensors: the edge tensor features V⁰ … V^{T−1}, (E, tensor_irreps[t].dim) each.
        envelope: (E,) u(r_ij).
    """

    latent: torch.Tensor
    tensors: list[torch.Tensor]
    envelope: torch.Tensor


def weighted_harmonics(weights: torch.Tensor, sh: torch.Tensor, channels: int, degrees: list[int]) -> torch.Tensor:
    """w_{c,l} Y_lm for every channel c and degree l.

    weights (S, channels · len(degrees)), channel-major (index c · len(degrees) + l); sh
    (S, Σ_l 2l+1) -> (S, channels · Σ_l (2l+1)) in e3nn's layout of ``channels x (0e+1o+2e…)``
    (each block ``channels x l`` channel-major)."""
    w = weights.view(-1, channels, len(degrees))
    blocks = sh.split([2 * l + 1 for l in degrees], dim=1)
    products = [(w[:, :, k, None] * block[:, None, :]).flatten(1) for k, block in enumerate(blocks)]
    return torch.cat(products, dim=1)


def useful_irreps(candidates: o3.Irreps, environment: o3.Irreps, wanted: set[o3.Irrep]) -> set[o3.Irrep]:
    """The irreps of ``candidates`` whose product with some irrep of ``environment`` contains one of ``wanted``."""
    return {ir for _, ir in candidates if any(out in wanted for _, env in environment for out in ir * env)}


class AllegroLayer(nn.Module):
    """One Allegro layer: environment embedding, tensor product, latent update, linear.

    Args:
        irreps_in: irreps of the edge tensor features V (multiplicity C throughout).
        irreps_env: irreps of the environment embedding Γ (C x 0e+1o+2e…).
        allowed: the irreps (multiplicity C each, in this order) the layer's output V may have, of
            those the product reaches; None: the last layer (no V is formed, only the scalars of
            the product are used).
        latent_features, latent_hidden: F and the hidden width of the latent MLP.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_env: o3.Irreps,
        allowed: o3.Irreps | None,
        latent_features: int,
        latent_hidden: int,
    ):
        super().__init__()
        self.channels = irreps_env[0].mul
        self.degrees = [ir.l for _, ir in irreps_env]
        self.environment_weights = nn.Linear(latent_features, self.channels * len(self.degrees), bias=False)
        outputs = {EVEN_SCALAR} if allowed is None else {ir for _, ir in allowed}
        irreps_mid, instructions = coupling_paths(irreps_in, irreps_env, outputs, mode="uuu", weighted=False)
        self.tensor_product = TensorProduct(irreps_in, irreps_env, irreps_mid, instructions)
        blocks = zip(irreps_mid.slices(), irreps_mid)
        self.scalar_slices = [(s.start, s.stop) for s, (_, ir) in blocks if ir == EVEN_SCALAR]
        num_scalars = sum(stop - start for start, stop in self.scalar_slices)
        self.latent = mlp([latent_features + num_scalars, latent_hidden, latent_features], nn.SiLU)
        if allowed is None:
            self.linear, self.irreps_out = None, o3.Irreps("")
        else:
            produced = {ir for _, ir in irreps_mid}
            self.irreps_out = o3.Irreps([(mul, ir) for mul, ir in allowed if ir in produced])
            self.linear = o3.Linear(irreps_mid, self.irreps_out)

    def forward(
        self,
        latent: torch.Tensor,
        tensors: torch.Tensor,
        sh: torch.Tensor,
        envelope: torch.Tensor,
        centres: torch.Tensor,
        num_atoms: int,
        avg_num_neighbors: float,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """latent (E, F), tensors (E, irreps_in.dim), sh (E, Σ_l 2l+1), envelope (E,), centres
        (E,) int64 the centre atom of each edge, of ``num_atoms`` -> the new latent (E, F) and
        tensors (E, irreps_out.dim) (None after the last layer)."""
        per_edge = weighted_harmonics(self.environment_weights(latent), sh, self.channels, self.degrees)
        environment = per_edge.new_zeros(num_atoms, per_edge.shape[1]).index_add(0, centres, per_edge)
        environment = environment.index_select(0, centres) / math.sqrt(avg_num_neighbors)
        product = self.tensor_product(tensors, environment)
        scalars = [product[:, start:stop] for start, stop in self.scalar_slices]
        update = self.latent(torch.cat([latent, *scalars], dim=1)) * envelope[:, None]
        latent = (latent + update) / math.sqrt(2.0)
        return latent, None if self.linear is None else self.linear(product)


@register_family("allegro")
class Allegro(AtomisticModel):
    """Allegro with a Bessel × polynomial (p = 6) radial basis (see the module docstring).

    Args:
        num_layers: number of tensor-product layers T (≥ 1).
        lmax: largest l of the spherical harmonics and of the edge tensor features (0–3).
        parity: edge tensor features of both parities of every l (full O(3)) where the energy can
            use them (each layer keeps only the irreps that can still couple to the last layer's
            even scalars: with two layers that is natural parity alone); False keeps only
            p = (−1)^l. The energy is invariant under every O(3) element either way.
        num_tensor_features: channels C of the edge tensor features and of the environment embedding.
        latent_features: size F of the scalar latent of every edge.
        latent_hidden: hidden width of the two-body MLP and of each layer's latent MLP.
        edge_hidden: hidden width of the edge-energy MLP.
        num_basis: number of Bessel functions.
    """

    def __init__(
        self,
        species: Sequence[int],
        cutoff: float = 5.0,
        *,
        num_layers: int = 2,
        lmax: int = 2,
        parity: bool = True,
        num_tensor_features: int = 16,
        latent_features: int = 64,
        latent_hidden: int = 64,
        edge_hidden: int = 32,
        num_basis: int = 8,
        **base: Any,
    ):
        super().__init__(species, cutoff, **base)
        if not 0 <= int(lmax) <= 3:
            raise ValueError(f"allegro supports lmax = 0…3, got {lmax}.")
        if int(num_layers) < 1:
            raise ValueError(f"allegro needs num_layers ≥ 1, got {num_layers}.")
        for name, value in (("num_tensor_features", num_tensor_features), ("latent_features", latent_features),
                            ("latent_hidden", latent_hidden), ("edge_hidden", edge_hidden), ("num_basis", num_basis)):
            if int(value) < 1:
                raise ValueError(f"allegro needs {name} ≥ 1, got {value}.")
        self.num_layers = int(num_layers)
        self.lmax = int(lmax)
        self.parity = bool(parity)
        self.num_tensor_features = int(num_tensor_features)
        self.latent_features = int(latent_features)
        self.latent_hidden = int(latent_hidden)
        self.edge_hidden = int(edge_hidden)
        self.num_basis = int(num_basis)

        channels = self.num_tensor_features
        self.edge_embedding = EdgeEmbedding(self.cutoff, self.lmax, self.num_basis)
        irreps_env = o3.Irreps([(channels, ir) for _, ir in self.edge_embedding.irreps_sh])
        self.degrees = [ir.l for _, ir in irreps_env]
        self.two_body = mlp(
            [2 * self.num_species + self.num_basis, self.latent_hidden, self.latent_features], nn.SiLU
        )
        self.initial_weights = nn.Linear(self.latent_features, channels * len(self.degrees), bias=False)

        # what each layer's output must contain for the energy: work back from the last layer's 0e
        candidates = feature_irreps(channels, self.lmax, self.parity)
        wanted: list[o3.Irreps | None] = [None] * self.num_layers  # allowed output irreps of layer t
        needed = {EVEN_SCALAR}
        for t in range(self.num_layers - 2, -1, -1):
            needed = useful_irreps(candidates, irreps_env, needed)
            wanted[t] = o3.Irreps([(mul, ir) for mul, ir in candidates if ir in needed])
        layers, irreps = [], irreps_env
        for allowed in wanted:
            layer = AllegroLayer(irreps, irreps_env, allowed, self.latent_features, self.latent_hidden)
            layers.append(layer)
            irreps = layer.irreps_out
        self.layers = nn.ModuleList(layers)
        self.readout = mlp([self.latent_features, self.edge_hidden, 1], nn.SiLU)

    @property
    def message_passing_hops(self) -> int:
        """1: atom i's energy reads only the edges of i (no message passing between atoms)."""
        return 1

    @property
    def tensor_irreps(self) -> list[o3.Irreps]:
        """Irreps of the edge tensor features V⁰ … V^{T−1} (see :meth:`edge_features`)."""
        return [self.layers[0].tensor_product.irreps_in1] + [layer.irreps_out for layer in self.layers[:-1]]

    def edge_features(
        self,
        species: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
    ) -> EdgeFeatures:
        """Every edge's features; arguments as for :meth:`atomic_outputs`. Both directions of a
        pair are evaluated: the two-body MLP sees (Z_i, Z_j) in order."""
        embedding = self.edge_embedding
        distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
        sh = o3.spherical_harmonics(embedding.sh_degrees, edge_vectors, normalize=True, normalization="component")
        radial, envelope = embedding.radial_basis(distances), embedding.envelope(distances)
        one_hot = nn.functional.one_hot(species, self.num_species).to(radial.dtype)
        centres, pair_species = edge_index[0], one_hot.index_select(0, edge_index.reshape(-1)).view(2, -1, self.num_species)
        latent = self.two_body(torch.cat([pair_species[0], pair_species[1], radial], dim=1)) * envelope[:, None]
        tensors = [weighted_harmonics(self.initial_weights(latent), sh, self.num_tensor_features, self.degrees)]
        for layer in self.layers:
            latent, next_tensors = layer(
                latent, tensors[-1], sh, envelope, centres, species.shape[0], self.avg_num_neighbors
            )
            if next_tensors is not None:
                tensors.append(next_tensors)
        return EdgeFeatures(latent, tensors, envelope)

    def atomic_outputs(self, species, edge_index, edge_vectors, batch, num_graphs, tables=None):
        features = self.edge_features(species, edge_index, edge_vectors)
        edge_energies = self.readout(features.latent).squeeze(-1) * features.envelope
        per_atom = edge_energies.new_zeros(species.shape[0]).index_add(0, edge_index[0], edge_energies)
        return per_atom / self.avg_num_neighbors
