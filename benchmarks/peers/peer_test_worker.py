"""Test errors of a trained eqcalc, MACE or NequIP model through the package's own ASE calculator;
runs in the package's venv (benchmarks/peers/.venv/<peer>, eqcalc's own .venv), called by
train_peers.py and matched_accuracy.py.

    python peer_test_worker.py eqcalc MODEL_FILE TEST_EXTXYZ    # best_model.pt of eqcalc train
    python peer_test_worker.py mace   MODEL_FILE TEST_EXTXYZ    # file written by mace_run_train
    python peer_test_worker.py nequip CKPT_FILE  TEST_EXTXYZ    # Lightning checkpoint of nequip-train

Reads the reference labels from ``REF_energy`` (info, eV) and ``REF_forces`` (arrays, eV/Å), or
else from the frame's stored results (extxyz ``energy``/``forces``, as in ../shared/data), and
prints one JSON line: energy_mae_mev (meV per structure), forces_mae_mev (meV/Å per force
component), params, structures.
"""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np


def eqcalc_calculator(path: str):
    from eqcalc import EquivariantCalculator

    return EquivariantCalculator(path)


def mace_calculator(path: str, dtype: str = "float32", compile: bool = False):
    """MACECalculator of a model file; ``compile``: its torch.compile mode "default"."""
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=path, device="cpu", default_dtype=dtype, compile_mode="default" if compile else None)


def nequip_calculator(path: str):
    from nequip.integrations.ase import NequIPCalculator

    # nequip's loader for checkpoint and package files (EMA weights when trained with EMA), eager mode
    return NequIPCalculator._from_saved_model(path, device="cpu")


def parameter_count(calc) -> int:
    models = calc.models if hasattr(calc, "models") else [calc.model]
    return int(sum(p.numel() for p in models[0].parameters()))


def reference_labels(atoms) -> tuple[float, np.ndarray]:
    """(energy eV, forces eV/Å) stored with a test frame: REF_* keys, else the frame's own results."""
    if "REF_energy" in atoms.info:
        return float(atoms.info["REF_energy"]), np.asarray(atoms.arrays["REF_forces"])
    return float(atoms.get_potential_energy()), np.array(atoms.get_forces())


def main() -> int:
    peer, model_path, test_path = sys.argv[1:4]
    calc = {"eqcalc": eqcalc_calculator, "mace": mace_calculator, "nequip": nequip_calculator}[peer](model_path)
    energy_errors, force_errors = [], []
    for atoms in ase.io.read(test_path, index=":"):
        reference_energy, reference_forces = reference_labels(atoms)
        atoms.calc = calc
        energy_errors.append(atoms.get_potential_energy() - reference_energy)
        force_errors.append((atoms.get_forces() - reference_forces).ravel())
    result = {
        "energy_mae_mev": 1000.0 * float(np.mean(np.abs(energy_errors))),
        "forces_mae_mev": 1000.0 * float(np.mean(np.abs(np.concatenate(force_errors)))),
        "params": parameter_count(calc),
        "structures": len(energy_errors),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
