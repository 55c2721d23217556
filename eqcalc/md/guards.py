"""Checks that stop a simulation which has become unphysical, before it writes garbage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Guards:
    """Limits on one MD state. Close contacts (``min_distance``) are checked by the calculator,
    which raises ValueError naming the pair; non-finite results make it raise FloatingPointError.

    Attributes:
        max_force: largest allowed force on an atom, eV/Å.
        max_temperature: largest allowed temperature, K.
    """

    max_force: float
    max_temperature: float

    def check(self, energy: float, forces: np.ndarray, temperature: float) -> str | None:
        """A message describing the first violated limit, or None when the state is sound.

        Args:
            energy: potential energy, eV.
            forces: (N, 3) eV/Å.
            temperature: K.
        """
        if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
            return "the potential energy or forces are NaN or infinite"
        norms = np.linalg.norm(forces, axis=1)
        worst = int(np.argmax(norms)) if norms.size else 0
        if norms.size and norms[worst] > self.max_force:
            return (
                f"the force on atom {worst} is {norms[worst]:.3g} eV/Å, above the limit of {self.max_force:g} eV/Å "
                "(atoms colliding, or a structure outside the model's training data)"
            )
        if not temperature <= self.max_temperature:
            return (
                f"the temperature reached {temperature:.4g} K, above the limit of {self.max_temperature:g} K "
                "(energy is not conserved: try a smaller timestep)"
            )
        return None
