"""eqcalc: symmetry-preserving machine-learned interatomic potentials for ASE."""

__version__ = "0.1.0"

from .calculator import EquivariantCalculator  # noqa: E402
from .importers.mace import import_mace  # noqa: E402
from .inference import predict  # noqa: E402
from .models import build_model, load_model, save_model  # noqa: E402
from .properties import compute_properties  # noqa: E402

__all__ = [
    "EquivariantCalculator", "__version__", "build_model", "compute_properties", "import_mace", "load_model",
    "predict", "save_model",
]
