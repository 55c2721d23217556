"""NequIP: the shared physics suite for lmax 0–2 with and without parity, plus irreps checks.

(lmax = 0 with parity is the same model as without: pseudoscalars are unreachable
from scalars and Y_0; test_feature_parities checks that.)"""

import pytest
import torch
from e3nn import o3
from irreps_checks import assert_equivariant_layers, assert_paths_obey_selection_rules, obeys_selection_rules

from eqcalc.models import build_model
from eqcalc.testing import ModelPhysicsTests, physics

SMALL = {"num_features": 4, "num_basis": 4, "radial_hidden": 8, "radial_layers": 1}


class TestNequIPScalars(ModelPhysicsTests):
    family = "nequip"
    hyper = {**SMALL, "lmax": 0, "parity": False, "num_layers": 2}


class TestNequIPVectors(ModelPhysicsTests):
    family = "nequip"
    hyper = {**SMALL, "lmax": 1, "parity": False, "num_layers": 2}


class TestNequIPVectorsParity(ModelPhysicsTests):
    family = "nequip"
    hyper = {**SMALL, "lmax": 1, "parity": True, "num_layers": 2}


class TestNequIPTensors(ModelPhysicsTests):
    family = "nequip"
    hyper = {**SMALL, "lmax": 2, "parity": False, "num_layers": 2}


class TestNequIPTensorsParity(ModelPhysicsTests):
    family = "nequip"
    hyper = {**SMALL, "lmax": 2, "parity": True, "num_layers": 2}


def small_nequip(lmax: int, parity: bool, num_layers: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    hyper = {**SMALL, "lmax": lmax, "parity": parity, "num_layers": num_layers}
    return build_model("nequip", species=[1, 6, 8], cutoff=4.0, **hyper).to(torch.float64)


@pytest.mark.parametrize("lmax", [0, 1, 2])
@pytest.mark.parametrize("parity", [False, True], ids=["natural", "parity"])
def test_layer_features_transform_with_wigner_d(lmax, parity):
    """h_t(R r) = D_t(R) h_t(r) for every layer, rotations and reflections alike."""
    molecule = physics.sample_structures([1, 6, 8])["molecule"]
    assert_equivariant_layers(small_nequip(lmax, parity), molecule)


@pytest.mark.parametrize("lmax", [0, 1, 2, 3])
def test_feature_parities(lmax):
    """parity=False keeps p = (−1)^l only; parity=True reaches both parities of every l
    (pseudoscalars 0o included) after three layers."""
    natural = small_nequip(lmax, parity=False, num_layers=1)
    assert all(ir.p == (-1) ** ir.l for irreps in natural.feature_irreps for _, ir in irreps)
    assert {ir.l for _, ir in natural.feature_irreps[-1]} == set(range(lmax + 1))
    full = small_nequip(lmax, parity=True, num_layers=3)
    expected = {o3.Irrep(l, p) for l in range(lmax + 1) for p in (1, -1)} if lmax > 0 else {o3.Irrep("0e")}
    assert {ir for _, ir in full.feature_irreps[-1]} == expected


def test_tensor_product_paths_obey_selection_rules_and_are_complete():
    """Every path obeys |l1−l2| ≤ l ≤ l1+l2, p = p1·p2, and every allowed path to a wanted irrep is present."""
    model = small_nequip(lmax=2, parity=True)
    for layer in model.layers:
        tensor_product = layer.convolution.tensor_product
        irreps_in1, irreps_in2 = tensor_product.irreps_in1, tensor_product.irreps_in2
        irreps_out = tensor_product.irreps_out
        assert_paths_obey_selection_rules(irreps_in1, irreps_in2, irreps_out, tensor_product.paths)
        wanted = {ir for _, ir in layer.gate.irreps_in}
        present = {(i1, i2, irreps_out[i_out].ir) for i1, i2, i_out in tensor_product.paths}
        for i1, (_, ir1) in enumerate(irreps_in1):
            for i2, (_, ir2) in enumerate(irreps_in2):
                for ir_out in wanted:
                    assert obeys_selection_rules(ir1, ir2, ir_out) == ((i1, i2, ir_out) in present)


def test_residual_only_between_equal_irreps():
    model = small_nequip(lmax=1, parity=True, num_layers=4)
    irreps_in = [o3.Irreps("4x0e")] + model.feature_irreps[:-1]
    assert [layer.residual for layer in model.layers] == [a == b for a, b in zip(irreps_in, model.feature_irreps)]
    assert model.layers[-1].residual


def test_rejects_unsupported_lmax():
    with pytest.raises(ValueError, match="lmax"):
        build_model("nequip", species=[1], lmax=4)
