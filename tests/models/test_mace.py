"""MACE: the shared physics suite, plus checks of the atomic and product bases."""

import numpy as np
import pytest
import torch
from e3nn import o3
from irreps_checks import assert_equivariant_layers, assert_paths_obey_selection_rules, orthogonal_matrices, wigner_d

from eqcalc.models import build_model
from eqcalc.models.mace import ProductBasis
from eqcalc.nn.irreps import TensorProduct, coupling_paths
from eqcalc.testing import ModelPhysicsTests, physics

SMALL = {"num_channels": 4, "num_basis": 4, "radial_hidden": 8, "radial_layers": 1, "readout_hidden": 4}


class TestMACEVectors(ModelPhysicsTests):
    family = "mace"
    hyper = {**SMALL, "lmax": 1, "max_L": 1, "correlation": 3, "num_layers": 2}


class TestMACETensors(ModelPhysicsTests):
    family = "mace"
    hyper = {**SMALL, "lmax": 2, "max_L": 2, "correlation": 2, "num_layers": 3}


def small_mace(**hyper) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mace", species=[1, 6, 8], cutoff=4.0, **{**SMALL, **hyper}).to(torch.float64)


def random_product_basis(correlation: int, lmax: int = 3, max_L: int = 2, channels: int = 3):
    """A float64 ProductBasis on the atomic basis C×(0e+1o+…+lmax), its input and species."""
    torch.manual_seed(1)
    irreps_a = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(lmax)])
    irreps_out = o3.Irreps([(channels, ir) for _, ir in o3.Irreps.spherical_harmonics(max_L)])
    product = ProductBasis(irreps_a, irreps_out, correlation, num_species=2).to(torch.float64)
    return product, irreps_a.randn(5, -1, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])


@pytest.mark.parametrize(
    "hyper",
    [{"lmax": 1, "max_L": 1}, {"lmax": 3, "max_L": 2, "num_layers": 3}, {"lmax": 2, "max_L": 0, "correlation": 2}],
    ids=["L1", "L2-lmax3", "L0"],
)
def test_layer_features_transform_with_wigner_d(hyper):
    """h_t(R r) = D_t(R) h_t(r) for every layer, rotations and reflections alike."""
    molecule = physics.sample_structures([1, 6, 8])["molecule"]
    assert_equivariant_layers(small_mace(**hyper), molecule)


def test_product_basis_is_equivariant():
    """Σ_ν W_Z B⁽ν⁾(D_A A) = D_out Σ_ν W_Z B⁽ν⁾(A), with intermediates up to l = 5 of both parities."""
    product, basis, species = random_product_basis(correlation=3)
    output = product(basis, species).detach()
    assert all(float(output[:, s].norm()) > 1e-6 for s in product.irreps_out.slices())
    for rotation in orthogonal_matrices():
        d_in = wigner_d(product.irreps_a, rotation)
        d_out = wigner_d(product.irreps_out, rotation)
        moved = product(basis @ d_in.T, species).detach()
        torch.testing.assert_close(moved, output @ d_out.T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_product_basis_is_a_polynomial_of_degree_correlation(correlation):
    """B(λA) = Σ_{ν=1}^{correlation} λ^ν c_ν exactly, with c_correlation ≠ 0 (body order correlation + 1)."""
    product, basis, species = random_product_basis(correlation)
    product.requires_grad_(False)
    scales = torch.linspace(0.5, 2.0, correlation + 3, dtype=torch.float64)  # two more points than unknowns
    values = torch.stack([product(s * basis, species) for s in scales])
    powers = scales[:, None] ** torch.arange(1, correlation + 1, dtype=torch.float64)
    coefficients = torch.linalg.lstsq(powers, values.reshape(len(scales), -1)).solution
    residual = powers @ coefficients - values.reshape(len(scales), -1)
    assert float(residual.abs().max()) < 1e-9 * float(values.abs().max())
    assert float(coefficients[-1].abs().max()) > 1e-3 * float(coefficients.abs().max())
    assert float(product(0 * basis, species).abs().max()) == 0.0


def test_symmetric_square_drops_only_vanishing_and_duplicate_paths():
    """In A ⊗ A channel-wise, path (i, i) → odd l vanishes and (j, i) equals ±(i, j),
    so keeping i ≤ j and even l on the diagonal loses nothing."""
    irreps_a = o3.Irreps("3x0e+3x1o+3x2e+3x3o")
    allowed = {ir for l in range(7) for ir in (o3.Irrep(l, 1), o3.Irrep(l, -1))}
    irreps_full, instructions = coupling_paths(irreps_a, irreps_a, allowed, "uuu", weighted=False)
    full = TensorProduct(irreps_a, irreps_a, irreps_full, instructions).to(torch.float64)
    a = irreps_a.randn(4, -1, dtype=torch.float64)
    out = full(a, a)
    blocks = {(i1, i2, irreps_full[i].ir): out[:, irreps_full.slices()[i]] for i1, i2, i, _, _ in instructions}
    irreps_kept, kept_instructions = coupling_paths(
        irreps_a, irreps_a, allowed, "uuu", weighted=False, symmetric=True
    )
    kept = {(i1, i2, irreps_kept[i].ir) for i1, i2, i, _, _ in kept_instructions}
    assert len(kept) < len(blocks)
    for (i1, i2, ir), block in blocks.items():
        if (i1, i2, ir) in kept:
            assert float(block.abs().max()) > 1e-6
        elif (i2, i1, ir) in kept:
            sign = (-1) ** (irreps_a[i1].ir.l + irreps_a[i2].ir.l + ir.l)
            torch.testing.assert_close(block, sign * blocks[(i2, i1, ir)], atol=1e-12, rtol=0)
        else:
            assert float(block.abs().max()) < 1e-12


def test_tensor_product_paths_obey_selection_rules():
    model = small_mace(lmax=3, max_L=2, correlation=3)
    for layer in model.layers:
        tp = layer.atomic_basis.tensor_product
        assert_paths_obey_selection_rules(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, tp.paths)
        for irreps_prev, irreps_next, instructions in layer.product_basis.steps:
            assert_paths_obey_selection_rules(irreps_prev, layer.product_basis.irreps_a, irreps_next, instructions)


def test_product_weights_depend_on_species():
    product, basis, _ = random_product_basis(correlation=2)
    same = product(basis, torch.zeros(5, dtype=torch.int64))
    other = product(basis, torch.ones(5, dtype=torch.int64))
    assert not np.allclose(same.detach().numpy(), other.detach().numpy())


@pytest.mark.parametrize("hyper", [{"max_L": 2, "lmax": 1}, {"lmax": 4}, {"correlation": 0}])
def test_rejects_bad_hyperparameters(hyper):
    with pytest.raises(ValueError, match="mace needs"):
        build_model("mace", species=[1], **hyper)
