"""Building blocks shared by the model families: cutoffs, radial bases, sums, MLPs."""

from .activations import ShiftedSoftplus, mlp
from .cutoffs import CosineCutoff, PolynomialCutoff, build_cutoff
from .radial import BesselBasis, GaussianBasis
from .scatter import scatter_sum

__all__ = [
    "BesselBasis",
    "CosineCutoff",
    "GaussianBasis",
    "PolynomialCutoff",
    "ShiftedSoftplus",
    "build_cutoff",
    "mlp",
    "scatter_sum",
]
