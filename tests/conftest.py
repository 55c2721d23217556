import os

# One BLAS thread: scipy/numpy work inside the tests (ASE cell filters, optimisers) is tiny, and
# BLAS threads fighting over the cores made some tests 20x slower. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

import eqcalc
from eqcalc.testing.physics import randomize_energy_offsets

# The tests use tiny models whose hundreds of small kernels only lose from intra-op threads
# (and several test processes may share the cores): one thread each, for speed and determinism.
torch.set_num_threads(1)


@pytest.fixture
def schnet64():
    """A small float64 SchNet for H, C, O, Cu with random weights and element energies."""
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=[1, 6, 8, 29], cutoff=4.0, num_features=16, num_interactions=2)
    return randomize_energy_offsets(model).double().eval()


@pytest.fixture
def ethanol():
    return molecule("CH3CH2OH")


@pytest.fixture
def triclinic_cu():
    """Two-atom triclinic Cu cell, smaller than the cutoff, slightly rattled."""
    atoms = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.1, 0.2], [0.15, 0.0, -0.1], [0.2, -0.1, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    return atoms
