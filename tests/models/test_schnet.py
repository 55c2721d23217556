"""SchNet through the shared physics suite, with both cutoff envelopes."""

from eqcalc.testing import ModelPhysicsTests


class TestSchNetCosine(ModelPhysicsTests):
    family = "schnet"
    hyper = {"num_features": 16, "num_interactions": 2, "num_basis": 12, "cutoff_fn": "cosine"}


class TestSchNetPolynomial(ModelPhysicsTests):
    family = "schnet"
    hyper = {"num_features": 16, "num_interactions": 2, "num_basis": 12, "cutoff_fn": "polynomial"}
