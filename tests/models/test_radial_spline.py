"""Tabulated radial functions (eqcalc.nn.radial.RadialSpline) and the frozen NequIP / MACE models
that use them on the CPU-kernel path.

The spline must reproduce the function (float64: 1e-11 of its largest value, checked away from the
knots), vanish from r_c on, have the derivative of its own values (finite differences) and the
function's, be continuous in value and slope at knots; bad distances must raise. Frozen models
(tables) must give the MLP models' energies, forces and stress to 1e-8 (relative; the slopes of a
cubic spline are one order of h less accurate than its values), forces and stress that are the
gradients of their own energy, and exact symmetry.
"""

import copy
import math

import pytest
import torch
from ase.build import molecule

import eqcalc
from eqcalc.data.graph import atoms_to_graph
from eqcalc.data.structures import water_box
from eqcalc.nn import kernels
from eqcalc.nn.cutoffs import PolynomialCutoff
from eqcalc.nn.radial import BesselBasis, RadialSpline
from eqcalc.properties import compute_properties
from eqcalc.testing.physics import force_fd_error, randomize_energy_offsets, stress_fd_error, symmetry_errors

pytestmark = pytest.mark.skipif(not kernels.available(), reason="eqcalc's CPU kernels could not be built here")

CUTOFF = 4.0


def smooth_function(r: torch.Tensor) -> torch.Tensor:
    """Three outputs of a Bessel basis with envelope, as the models' radial inputs: (n,) -> (n, 3)."""
    basis = BesselBasis(CUTOFF, 4, trainable=False).double()(r) * PolynomialCutoff(CUTOFF)(r)[:, None]
    return basis @ torch.tensor([[1.0, -0.5, 0.2], [0.3, 2.0, -1.0], [-0.7, 0.1, 0.4], [0.05, -0.3, 1.5]], dtype=torch.float64)


@pytest.fixture(scope="module")
def spline():
    return RadialSpline(smooth_function, CUTOFF, torch.float64, "cpu", tolerance=1e-11)


def test_spline_reproduces_the_function(spline):
    assert spline.max_error <= 1e-11 and spline.intervals < RadialSpline.MAX_INTERVALS
    r = RadialSpline.START + torch.rand(2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (
        CUTOFF - RadialSpline.START
    )
    exact = smooth_function(r)
    assert float((spline(r) - exact).abs().max()) <= 1e-11 * float(exact.abs().max())
    beyond = torch.tensor([CUTOFF, CUTOFF + 1e-9, 2 * CUTOFF], dtype=torch.float64)
    assert torch.equal(spline(beyond), torch.zeros(3, 3, dtype=torch.float64))


def test_spline_derivative_is_its_own_and_the_functions(spline):
    r = 0.1 + torch.rand(300, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * (CUTOFF - 0.2)
    weights = torch.randn(300, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r.requires_grad_(True)
    (gradient,) = torch.autograd.grad((spline(r) * weights).sum(), r)
    delta = 1e-6
    with torch.no_grad():
        central = ((spline(r + delta) - spline(r - delta)) * weights).sum(1) / (2 * delta)
    assert float((gradient - central).abs().max()) < 1e-7 * float(central.abs().max())
    exact = torch.func.jvp(smooth_function, (r.detach(),), (torch.ones_like(r),))[1]
    assert float((gradient - (exact * weights).sum(1)).abs().max()) < 1e-8 * float(central.abs().max())


def test_spline_is_continuous_with_its_slope_at_knots(spline):
    """Either side of a knot (intervals i − 1 and i): the values differ by the slope times the step,
    the slopes by no more than the curvature times the step."""
    knots = RadialSpline.START + torch.tensor([1, spline.intervals // 3, spline.intervals - 1], dtype=torch.float64) * spline.spacing
    epsilon = 1e-7 * spline.spacing
    below, above = (knots - epsilon).requires_grad_(True), (knots + epsilon).requires_grad_(True)
    values = spline(below), spline(above)
    scale = float(values[0].abs().max())
    for k in range(values[0].shape[1]):
        slopes = [torch.autograd.grad(v[:, k].sum(), x, retain_graph=True)[0] for v, x in zip(values, (below, above))]
        jump = values[1][:, k] - values[0][:, k] - 0.5 * (slopes[0] + slopes[1]) * 2 * epsilon
        assert float(jump.abs().max()) < 1e-12 * scale
        assert float((slopes[1] - slopes[0]).abs().max()) < 1e-6 * max(float(slopes[0].abs().max()), 1e-3)


@pytest.mark.parametrize("bad", [0.5 * RadialSpline.START, -0.1, math.nan])
def test_spline_rejects_nan_or_too_short_distances(spline, bad):
    with pytest.raises(RuntimeError, match="NaN or below the table's first knot.*overlapping atoms"):
        spline(torch.tensor([1.0, bad], dtype=torch.float64))


def test_spline_gives_no_gradient_for_its_table(spline):
    values = spline.values.clone().requires_grad_(True)
    out = kernels.radial_spline(torch.tensor([1.0], dtype=torch.float64), values, spline.slopes, spline.START, spline.spacing)
    with pytest.raises(RuntimeError, match="no gradient for its table"):
        out.sum().backward()


MODELS = {
    "nequip": ("nequip", {"num_features": 12, "lmax": 2, "num_layers": 2}),
    "mace": ("mace", {"num_channels": 16, "max_L": 1, "lmax": 2}),
}


def frozen_and_mlp_models(name):
    family, sizes = MODELS[name]
    torch.manual_seed(0)
    model = eqcalc.build_model(family, species=[1, 6, 8], cutoff=CUTOFF, avg_num_neighbors=8.0, **sizes)
    model = randomize_energy_offsets(model).double().eval().requires_grad_(False)
    assert model.set_kernels(True)
    frozen = copy.deepcopy(model)
    frozen.freeze_weights(True)
    return frozen, model


@pytest.mark.parametrize("name", list(MODELS))
def test_frozen_model_equals_the_mlp_model(name):
    frozen, model = frozen_and_mlp_models(name)
    assert all(c.radial_spline is not None for c in frozen._convolutions())
    for atoms, stress in ((molecule("CH3CH2OH"), False), (water_box(seed=2), True)):
        graph = atoms_to_graph(atoms, CUTOFF)
        expected = compute_properties(model, graph, forces=True, stress=stress)
        actual = compute_properties(frozen, graph, forces=True, stress=stress)
        for key, value in expected.items():
            scale = max(float(value.abs().max()), 1e-2)  # (the water box's stress is ~1e-3 eV/Å³)
            assert float((actual[key] - value).abs().max()) <= 1e-8 * scale, (key, scale)


@pytest.mark.parametrize("name", list(MODELS))
def test_frozen_model_forces_and_stress_are_gradients_and_symmetric(name):
    frozen, _ = frozen_and_mlp_models(name)
    assert force_fd_error(frozen, molecule("CH3CH2OH")) < 1e-6
    assert stress_fd_error(frozen, water_box(seed=4)) < 1e-6
    errors = symmetry_errors(frozen, molecule("CH3CH2OH"), num_transforms=3)
    assert max(errors.values()) < 1e-10, errors


def test_frozen_tables_follow_dtype_and_unfreeze():
    frozen, _ = frozen_and_mlp_models("nequip")
    convolution = frozen._convolutions()[0]
    frozen.float()
    assert convolution.radial_spline.values.dtype == torch.float32 and convolution.radial_spline.max_error > 1e-11
    frozen.double()  # tabulated again in float64 (not the float32 table cast)
    assert convolution.radial_spline.values.dtype == torch.float64 and convolution.radial_spline.max_error <= 1e-11
    frozen.freeze_weights(False)
    assert convolution.radial_spline is None


def test_freezing_refuses_or_stops_training():
    """Frozen values would not train: freezing needs parameters without gradients, and a frozen model
    whose parameters need gradients again raises instead of training silently on its tables."""
    frozen, model = frozen_and_mlp_models("mace")
    model.requires_grad_(True)
    with pytest.raises(RuntimeError, match="needs parameters without gradients"):
        model.freeze_weights(True)
    frozen.requires_grad_(True)
    graph = atoms_to_graph(molecule("CH3CH2OH"), CUTOFF)
    with pytest.raises(RuntimeError, match="freeze_weights\\(False\\)"):
        compute_properties(frozen, graph, forces=True, training=True)
    frozen.freeze_weights(False)
    compute_properties(frozen, graph, forces=False)["energy"].sum().backward()  # trains again (energy loss)


def test_tables_only_for_the_kernel_path():
    """Without the CPU kernels (kernels=False, or on another device) nothing is tabulated."""
    _, model = frozen_and_mlp_models("nequip")
    calc = eqcalc.EquivariantCalculator(model, kernels=False)
    assert calc.model.weights_frozen and all(c.radial_spline is None for c in calc.model._convolutions())
    assert all(c.radial_spline is not None for c in eqcalc.EquivariantCalculator(model).model._convolutions())
