"""The dense tensor products (neighbour-slot convolution, species-weighted product basis)
against e3nn's per-path reference, values and gradients, float64 to 1e-12."""

import pytest
import torch
from e3nn import o3
from e3nn_reference import ReferenceProductBasis, per_slot, reference_convolution

from eqcalc.models.mace import ProductBasis
from eqcalc.nn.irreps import EdgeEmbedding, coupling_paths, feature_irreps, irreps_up_to
from eqcalc.nn.neighbour_slots import NeighbourSlots
from eqcalc.nn.tensor_product import ConvolutionProduct

NATURAL = {o3.Irrep(l, (-1) ** l) for l in range(4)}


def random_edges(num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    """Unsorted random edges; the last two atoms have none (isolated atoms)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_nodes - 2, (2, num_edges), generator=generator)


def assert_close_with_gradients(fast, reference, inputs, atol=1e-12):
    """fast(*inputs) == reference(*inputs), and so are the gradients of a random projection."""
    outputs = [f(*inputs) for f in (fast, reference)]
    torch.testing.assert_close(outputs[0], outputs[1], atol=atol, rtol=0)
    assert float(outputs[1].detach().abs().max()) > 1e-3
    projection = torch.randn_like(outputs[1])
    grads = [torch.autograd.grad((out * projection).sum(), inputs) for out in outputs]
    for g_fast, g_ref in zip(*grads):
        torch.testing.assert_close(g_fast, g_ref, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "irreps_in, lmax, allowed",
    [
        ("3x0e", 3, NATURAL),
        ("3x0e+3x1o", 3, NATURAL),
        (str(feature_irreps(2, 2)), 2, irreps_up_to(2)),
        (str(feature_irreps(2, 1, parity=False)), 1, irreps_up_to(1)),
    ],
    ids=["mace-first", "mace-L1", "nequip-l2-parity", "nequip-l1"],
)
def test_convolution_matches_e3nn(irreps_in, lmax, allowed):
    """Σ_j TP(x_j, Y_ij; w_ij) on the slot table == e3nn TensorProduct per edge + scatter."""
    torch.manual_seed(0)
    irreps_in, irreps_sh = o3.Irreps(irreps_in), o3.Irreps.spherical_harmonics(lmax)
    irreps_mid, instructions = coupling_paths(irreps_in, irreps_sh, allowed, "uvu", weighted=True)
    fast = ConvolutionProduct(irreps_in, irreps_sh, instructions, irreps_mid).to(torch.float64)
    num_nodes, edge_index = 9, random_edges(9, 40)
    slots = NeighbourSlots.from_edges(edge_index, num_nodes)
    features = irreps_in.randn(num_nodes, -1, dtype=torch.float64, requires_grad=True)
    sh = irreps_sh.randn(edge_index.shape[1], -1, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(fast.num_paths, edge_index.shape[1], fast.channels, dtype=torch.float64, requires_grad=True)

    def dense(features, sh, weights):
        return fast(features, per_slot(slots, sh), [per_slot(slots, w) for w in weights], slots)

    def reference(features, sh, weights):
        e3nn_weights = weights.permute(1, 0, 2).reshape(edge_index.shape[1], -1)  # per edge: path-major
        return reference_convolution(fast, features, sh, e3nn_weights, edge_index)

    assert_close_with_gradients(dense, reference, (features, sh, weights))


@pytest.mark.parametrize(
    "correlation, lmax, max_L", [(1, 3, 1), (2, 3, 2), (3, 3, 1), (3, 3, 0), (3, 2, 2), (4, 1, 1)]
)
def test_product_basis_matches_e3nn(correlation, lmax, max_L):
    """The dense per-species evaluation == one e3nn "uuu" product per order + per-block species mix,
    with a species absent from the batch."""
    torch.manual_seed(1)
    irreps_a = o3.Irreps([(3, ir) for _, ir in o3.Irreps.spherical_harmonics(lmax)])
    irreps_out = o3.Irreps([(3, ir) for _, ir in o3.Irreps.spherical_harmonics(max_L)])
    fast = ProductBasis(irreps_a, irreps_out, correlation, num_species=3).to(torch.float64)
    reference = ReferenceProductBasis(fast)
    basis = irreps_a.randn(7, -1, dtype=torch.float64, requires_grad=True)
    species = torch.tensor([0, 2, 2, 0, 2, 0, 0])
    assert_close_with_gradients(lambda a: fast(a, species), lambda a: reference(a, species), (basis,))


def test_coefficients_exact_after_float32_round_trip():
    """float64 → float32 → float64 gives back the float64 Clebsch–Gordan coefficients exactly."""
    irreps_in, irreps_sh = o3.Irreps("2x0e+2x1o"), o3.Irreps.spherical_harmonics(2)
    irreps_mid, instructions = coupling_paths(irreps_in, irreps_sh, NATURAL, "uvu", weighted=True)
    module = ConvolutionProduct(irreps_in, irreps_sh, instructions, irreps_mid).to(torch.float64)
    exact = {name: buffer.clone() for name, buffer in module.named_buffers() if buffer.is_floating_point()}
    assert "kernel_coefficients" in exact
    module.to(torch.float32).to(torch.float64)
    for name, buffer in module.named_buffers():
        if name in exact:
            assert buffer.dtype == torch.float64
            assert torch.equal(buffer, exact[name]), name


def test_neighbour_slots_hold_every_edge_once():
    edge_index = random_edges(9, 40, seed=3)
    slots = NeighbourSlots.from_edges(edge_index, 9)
    used = slots.edge_of_slot < edge_index.shape[1]
    assert sorted(slots.edge_of_slot[used].tolist()) == list(range(edge_index.shape[1]))
    rows = torch.arange(9).repeat_interleave(slots.width)
    assert torch.equal(edge_index[0, slots.edge_of_slot[used]], rows[used])
    assert torch.equal(edge_index[1, slots.edge_of_slot[used]], slots.neighbour_of_slot[used])
    assert slots.width == int(torch.bincount(edge_index[0]).max())


def test_padding_slots_have_zero_radial_basis():
    embedding = EdgeEmbedding(cutoff=4.0, lmax=2, num_basis=6).to(torch.float64)
    edge_index = random_edges(6, 15, seed=4)
    slots = NeighbourSlots.from_edges(edge_index, 6)
    with torch.no_grad():
        radial, sh, _ = embedding(torch.randn(15, 3, dtype=torch.float64), slots)
    padding = slots.edge_of_slot == 15
    assert bool(padding.any()) and float(radial[~padding].abs().max()) > 1e-3
    assert float(radial[padding].abs().max()) == 0.0
    assert bool(torch.isfinite(sh).all())
