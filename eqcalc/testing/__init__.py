"""Physics checks for eqcalc models (and users' own): symmetry, finite differences, extensivity.

``eqcalc.testing.physics`` holds the checks as functions; ``ModelPhysicsTests``
(import it from ``eqcalc.testing.suite``; it needs pytest) runs them as a test class.
"""

from . import physics

__all__ = ["ModelPhysicsTests", "physics"]


def __getattr__(name):
    if name == "ModelPhysicsTests":
        from .suite import ModelPhysicsTests

        return ModelPhysicsTests
    raise AttributeError(name)
