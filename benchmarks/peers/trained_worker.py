"""Timing worker for a TRAINED model: loads a model file through its package's ASE calculator
(eqcalc ``EquivariantCalculator``, ``MACECalculator``, ``NequIPCalculator``) and times it like
the random-weight workers (``worker_timing``), printing the same one JSON line. Runs in the
package's venv; ``--model`` is ``{"package": "eqcalc" | "mace" | "nequip", "file": PATH}``:

    python trained_worker.py --model '{"package": "mace", "file": "run/mace.model"}' \\
        --structure ethanol.extxyz --dtype float32 --repeats 20 --mode md --workdir /tmp
"""

from __future__ import annotations

from peer_test_worker import mace_calculator, nequip_calculator
from worker_timing import load_structure, parse_arguments, report, time_md, time_walk

PACKAGES = {"eqcalc": ("eqcalc",), "mace": ("mace-torch",), "nequip": ("nequip",)}


def trained_calculator(package: str, path: str, dtype: str, skin: float, compile: bool):
    """(ASE calculator, its torch model) of the model file ``path``; ``compile``: torch.compile
    the model where the calculator offers it (eqcalc, MACE; NequIP stays eager)."""
    if package == "eqcalc":
        from eqcalc import EquivariantCalculator

        calc = EquivariantCalculator(path, dtype=dtype, skin=skin, compile=compile, reuse_memory=True)
        return calc, calc.model
    if package == "mace":
        calc = mace_calculator(path, dtype, compile)
        return calc, calc.models[0]
    calc = nequip_calculator(path)
    return calc, calc.model


def main() -> None:
    args = parse_arguments(__doc__)
    package, path = args.model["package"], args.model["file"]
    calc, model = trained_calculator(package, path, args.dtype, args.skin, args.compile)
    timer = time_md if args.mode == "md" else time_walk
    times, energy = timer(calc, load_structure(args.structure), args.repeats, args.warmup, args.seed)
    report(times, energy, calc, model, PACKAGES[package], notes=f"trained model {path}" + (", compiled" if args.compile and package != "nequip" else ""))


if __name__ == "__main__":
    main()
