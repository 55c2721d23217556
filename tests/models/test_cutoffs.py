"""The polynomial envelope: its formula, its smoothness at r_c, and its accuracy near r_c."""

import pytest
import torch

from eqcalc.nn.cutoffs import PolynomialCutoff

ORDERS = [1, 2, 3, 5, 6, 8]


def expanded(x: torch.Tensor, p: int) -> torch.Tensor:
    """1 − (p+1)(p+2)/2 xᵖ + p(p+2) xᵖ⁺¹ − p(p+1)/2 xᵖ⁺² (the NequIP/DimeNet/mace-torch form)."""
    return 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)


@pytest.mark.parametrize("p", ORDERS)
def test_equals_the_expanded_polynomial(p):
    """To the rounding of the expanded form (its terms reach (p+1)(p+2)/2)."""
    r = torch.linspace(0.0, 6.0, 601, dtype=torch.float64)
    value = PolynomialCutoff(4.0, p)(r)
    inside = r < 4.0
    assert torch.allclose(value[inside], expanded(r[inside] / 4.0, p), rtol=0, atol=1e-13)
    assert torch.all(value[~inside] == 0)


@pytest.mark.parametrize("p", ORDERS)
def test_value_and_two_derivatives_vanish_at_the_cutoff(p):
    r = torch.tensor([4.0 - 1e-4], dtype=torch.float64, requires_grad=True)
    value = PolynomialCutoff(4.0, p)(r)
    (first,) = torch.autograd.grad(value.sum(), r, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), r)
    # f ~ (r_c − r)³ near r_c: f, f', f'' of order 1e-12, 1e-8, 1e-4 (times p-dependent factors)
    assert abs(float(value.detach())) < 1e-10 and abs(float(first.detach())) < 1e-6 and abs(float(second)) < 1e-2


@pytest.mark.parametrize("p", ORDERS)
def test_float32_is_accurate_relative_to_its_value_near_the_cutoff(p):
    """Near r_c the envelope is small; in float32 it stays within 1e-6 of its own value (the
    expanded form, a sum of cancelling terms, loses all its digits there)."""
    r32 = torch.linspace(3.6, 3.9999, 2001, dtype=torch.float32)
    exact = PolynomialCutoff(4.0, p)(r32.double())
    assert float(((PolynomialCutoff(4.0, p)(r32).double() - exact) / exact).abs().max()) < 1e-6
