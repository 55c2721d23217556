from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def ethanol_file() -> Path:
    """60 rMD17 ethanol frames (CC0): energy and forces, no cell."""
    return DATA / "ethanol_small.extxyz"


@pytest.fixture
def silicon_file() -> Path:
    """13 mlearn Si frames (BSD-3): periodic triclinic cells with energy, forces and stress."""
    return DATA / "si_small.extxyz"
