"""An imported mace-torch model on eqcalc against the same file on mace-torch's MACECalculator.

A foundation-like ScaleShiftMACE (128x0e+128x1o, max_ell 3, correlation 3, 2 residual
interactions, 89 elements, r_max 6 Å, radial MLP [64, 64, 64], random weights) is built once
with mace-torch's public API in the mace-torch peer venv (tests/importers/mace_reference.py,
which also records MACECalculator's float64 energy and forces), imported with
``eqcalc.import_mace``, and both are timed on 64 H2O (192 atoms) and a 216-atom Si box, float64
and float32: alternating fresh worker processes (eqcalc, mace, eqcalc, mace, ...), each timing
``--repeats`` energy+forces+stress calls along the same MD-like random walk after ``--warmup``
untimed ones (benchmarks/peers/worker_timing.py). Writes benchmarks/results/mace_import_speed.md.

    bash benchmarks/peers/setup_env.sh mace
    flock /tmp/eqcalc-timing.lock .venv/bin/python benchmarks/mace_import_speed.py [--rounds 3 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEER_PYTHON = HERE / "peers" / ".venv" / "mace" / "bin" / "python"
sys.path.insert(0, str(HERE / "peers"))
SPECIES = list(range(1, 90))
MODEL = {"species": SPECIES, "hidden_irreps": "128x0e+128x1o", "max_ell": 3, "correlation": 3,
         "num_interactions": 2, "first": "RealAgnosticResidualInteractionBlock", "r_max": 6.0, "num_bessel": 8,
         "num_polynomial_cutoff": 5, "radial_MLP": [64, 64, 64], "MLP_irreps": "16x0e", "avg_num_neighbors": 30.0}


def worker(package: str) -> None:
    """Worker mode (``worker eqcalc|mace`` then worker_timing's arguments; --model '{"file": ...}')."""
    from worker_timing import run

    def build(args, atoms):
        path = args.model["file"]
        if package == "mace":
            from mace.calculators import MACECalculator

            calc = MACECalculator(model_paths=path, device="cpu", default_dtype=args.dtype)
            return calc, calc.models[0], "MACECalculator (computes stress always)"
        import eqcalc

        calc = eqcalc.EquivariantCalculator(path, dtype=args.dtype, skin=args.skin)
        return calc, calc.model, f"EquivariantCalculator, kernels, skin {args.skin} Å"

    run(build, ("mace-torch",) if package == "mace" else ("eqcalc",), __doc__)


def structures(workdir: Path) -> dict[str, Path]:
    from ase.build import bulk
    from ase.io import write

    from eqcalc.data.structures import water_box

    silicon = bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3)
    silicon.rattle(0.05, seed=0)
    paths = {"64 H2O (192 atoms)": water_box(), "Si box (216 atoms)": silicon}
    out = {}
    for k, (name, atoms) in enumerate(paths.items()):
        out[name] = workdir / f"structure{k}.extxyz"
        write(out[name], atoms, format="extxyz")
    return out


def build_model(workdir: Path, frames: dict[str, Path]) -> tuple[Path, Path, str]:
    """The mace-torch model file, its eqcalc import, and the import's float64 agreement with
    MACECalculator on the benchmark structures."""
    import ase.io
    import numpy as np

    from eqcalc import EquivariantCalculator, import_mace

    all_frames = workdir / "all.extxyz"
    ase.io.write(all_frames, [ase.io.read(p) for p in frames.values()], format="extxyz")
    spec = {"workdir": str(workdir), "structures": str(all_frames), "models": {"foundation": MODEL}}
    (workdir / "spec.json").write_text(json.dumps(spec))
    reference_script = ROOT / "tests" / "importers" / "mace_reference.py"
    subprocess.run([str(PEER_PYTHON), str(reference_script), str(workdir / "spec.json")],
                   check=True, capture_output=True, env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    reference = json.loads((workdir / "reference.json").read_text())["foundation"]
    mace_file, eqcalc_file = workdir / "foundation.model", workdir / "foundation.pt"
    import_mace(mace_file, eqcalc_file)
    calc = EquivariantCalculator(eqcalc_file, dtype="float64")
    errors = []
    for atoms, expected in zip(ase.io.read(all_frames, ":"), reference):
        atoms.calc = calc
        forces = np.asarray(expected["forces"])
        errors.append((abs(atoms.get_potential_energy() - expected["energy"]) / abs(expected["energy"]),
                       np.abs(atoms.get_forces() - forces).max() / np.abs(forces).max()))
    agreement = (f"imported model vs MACECalculator, float64: energy {max(e for e, _ in errors):.1e}, "
                 f"forces {max(f for _, f in errors):.1e} relative (largest over the structures)")
    return mace_file, eqcalc_file, agreement


def time_side(package: str, model: Path, structure: Path, dtype: str, args) -> dict:
    python = str(PEER_PYTHON) if package == "mace" else sys.executable
    command = [python, str(Path(__file__).resolve()), "worker", package, "--structure", str(structure),
               "--model", json.dumps({"file": str(model)}), "--dtype", dtype, "--repeats", str(args.repeats),
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--workdir", str(model.parent)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=HERE / "peers")
    if done.returncode != 0:
        raise RuntimeError(f"{package} worker failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        package = sys.argv[2]
        sys.argv = [sys.argv[0]] + sys.argv[3:]
        worker(package)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating worker pairs per case")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per worker")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "mace_import_speed.md"))
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        print("mace-torch peer venv absent: run `bash benchmarks/peers/setup_env.sh mace` first.", file=sys.stderr)
        return 2
    from common import header, markdown_table

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        frames = structures(workdir)
        mace_file, eqcalc_file, agreement = build_model(workdir, frames)
        print(agreement, flush=True)
        for name, structure in frames.items():
            for dtype in ("float64", "float32"):
                times = {"eqcalc": [], "mace": []}
                for _ in range(args.rounds):
                    for package, model in (("eqcalc", eqcalc_file), ("mace", mace_file)):
                        times[package] += time_side(package, model, structure, dtype, args)["times_ms"]
                eqcalc_ms, mace_ms = statistics.median(times["eqcalc"]), statistics.median(times["mace"])
                rows.append([name, dtype, f"{mace_ms:.1f}", f"{eqcalc_ms:.1f}", f"{mace_ms / eqcalc_ms:.1f}x"])
                print(rows[-1], flush=True)
    table = markdown_table(["system", "dtype", "MACECalculator ms", "eqcalc ms", "ratio"], rows)
    text = "\n".join([
        "# Imported MACE model: eqcalc vs MACECalculator",
        "",
        "```", header(), f"rounds {args.rounds} x repeats {args.repeats} (warm-up {args.warmup}), "
        f"{args.threads} threads, eager", "```",
        "",
        "Model: ScaleShiftMACE 128x0e+128x1o, max_ell 3, correlation 3, 2 residual interactions, 89 elements, "
        "r_max 6 Å, radial MLP [64, 64, 64], MLP 16x0e, random weights; the same file on both sides "
        "(eqcalc: `eqcalc.import_mace`). Median ms per energy+forces+stress call; ratio = MACE ms / eqcalc ms.",
        "",
        agreement + ".",
        "",
        table,
        "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
