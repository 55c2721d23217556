"""An imported mace-torch model on eqcalc against the same file on mace-torch's MACECalculator.

Two foundation-like ScaleShiftMACE models (128x0e+128x1o, max_ell 3, correlation 3, 2 residual
interactions, 89 elements, r_max 6 Å, radial MLP [64, 64, 64], random weights): "MP-0-like"
(plain), and "MPA-0-like" (with ZBL pair repulsion and the Agnesi distance transform, as
MACE-MPA-0 and MACE-OMAT-0 have). They are built once with mace-torch's public API in the
mace-torch peer venv (tests/importers/mace_reference.py, which also records MACECalculator's
float64 energy and forces on the small structures), imported with ``eqcalc.import_mace``, and
timed on 64 H2O (192 atoms), 216-atom Si, Cu and mixed-oxide (Mg,Ni,Zn)O boxes and a 2,744-atom
Si cell, float64 and float32: alternating fresh worker processes (eqcalc, mace, eqcalc, mace,
...), each timing ``--repeats`` energy+forces+stress calls along the same MD-like random walk
after ``--warmup`` untimed ones (benchmarks/peers/worker_timing.py); the 2,744-atom cell gets one
round of ``--large-repeats`` calls after one warm-up. For the models named by ``--compile``,
eqcalc with ``compile=True`` is timed too (one worker per case and dtype, compiled on its warm-up
call) against the eager MACECalculator times of the same case. Writes benchmarks/results/mace_import_speed.md;
with ``--update`` (and ``--models`` / ``--systems`` naming a part), only the rows this run measures
are replaced there, the others kept with the commands that measured them.

    bash benchmarks/peers/setup_env.sh mace
    flock /tmp/eqcalc-timing.lock .venv/bin/python benchmarks/mace_import_speed.py [--rounds 2 --repeats 3 --compile MP-0-like]
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
MODELS = {"MP-0-like": MODEL, "MPA-0-like": {**MODEL, "pair_repulsion": True, "distance_transform": "Agnesi"}}
SYSTEMS = {"water": "64 H2O (192 atoms)", "si": "Si (216 atoms)", "cu": "Cu (216 atoms)", "oxide": "(Mg,Ni,Zn)O (216 atoms)",
           "si-2744": "Si (2744 atoms)"}  # --systems name -> row name
COLUMNS = ["model", "system", "dtype", "eqcalc", "MACECalculator ms", "eqcalc ms", "ratio"]
LARGE = 1000  # atoms: from this size on, one round of --large-repeats calls after one warm-up


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

        calc = eqcalc.EquivariantCalculator(path, dtype=args.dtype, skin=args.skin, compile=args.compile)
        return calc, calc.model, f"EquivariantCalculator, kernels, skin {args.skin} Å" + (
            ", compile=True" if args.compile else "")

    run(build, ("mace-torch",) if package == "mace" else ("eqcalc",), __doc__)


def structures(workdir: Path) -> dict[str, Path]:
    """The benchmark structures, written to ``workdir`` as extxyz: name -> path."""
    import numpy as np
    from ase.build import bulk
    from ase.io import write

    from eqcalc.data.structures import water_box

    def rattled(atoms, seed):
        atoms.rattle(0.05, seed=seed)
        return atoms

    oxide = bulk("MgO", "rocksalt", a=4.21, cubic=True) * (3, 3, 3)
    metals = np.flatnonzero(oxide.numbers == 12)
    oxide.numbers[np.random.default_rng(0).permutation(metals)[: 2 * len(metals) // 3]] = [28, 30] * (len(metals) // 3)
    boxes = {  # keys: SYSTEMS
        "64 H2O (192 atoms)": water_box(),
        "Si (216 atoms)": rattled(bulk("Si", "diamond", a=5.43, cubic=True) * (3, 3, 3), 0),
        "Cu (216 atoms)": rattled(bulk("Cu", "fcc", a=3.61) * (6, 6, 6), 1),
        "(Mg,Ni,Zn)O (216 atoms)": rattled(oxide, 2),
        "Si (2744 atoms)": rattled(bulk("Si", "diamond", a=5.43, cubic=True) * (7, 7, 7), 3),
    }
    out = {}
    for k, (name, atoms) in enumerate(boxes.items()):
        out[name] = workdir / f"structure{k}.extxyz"
        write(out[name], atoms, format="extxyz")
    return out


def build_models(workdir: Path, frames: dict[str, Path]) -> dict[str, tuple[Path, Path, str]]:
    """Per model name: the mace-torch model file, its eqcalc import, and the import's float64
    agreement with MACECalculator on the benchmark structures below LARGE atoms."""
    import ase.io
    import numpy as np

    from eqcalc import EquivariantCalculator, import_mace

    small = [atoms for atoms in map(ase.io.read, frames.values()) if len(atoms) < LARGE]
    checked = workdir / "checked.extxyz"
    ase.io.write(checked, small, format="extxyz")
    spec = {"workdir": str(workdir), "structures": str(checked), "models": MODELS}
    (workdir / "spec.json").write_text(json.dumps(spec))
    reference_script = ROOT / "tests" / "importers" / "mace_reference.py"
    subprocess.run([str(PEER_PYTHON), str(reference_script), str(workdir / "spec.json")],
                   check=True, capture_output=True, env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    references = json.loads((workdir / "reference.json").read_text())
    built = {}
    for name in MODELS:
        mace_file, eqcalc_file = workdir / f"{name}.model", workdir / f"{name}.pt"
        import_mace(mace_file, eqcalc_file)
        calc = EquivariantCalculator(eqcalc_file, dtype="float64")
        errors = []
        for atoms, expected in zip(ase.io.read(checked, ":"), references[name]):
            atoms.calc = calc
            forces = np.asarray(expected["forces"])
            errors.append((abs(atoms.get_potential_energy() - expected["energy"]) / abs(expected["energy"]),
                           np.abs(atoms.get_forces() - forces).max() / np.abs(forces).max()))
        built[name] = (mace_file, eqcalc_file, f"{name}: energy {max(e for e, _ in errors):.1e}, forces "
                       f"{max(f for _, f in errors):.1e}")
    return built


def time_side(package: str, model: Path, structure: Path, dtype: str, calls: tuple[int, int], args,
              compile: bool = False) -> list[float]:
    """ms of each of ``calls`` = (timed, warm-up) calls of one fresh worker process."""
    python = str(PEER_PYTHON) if package == "mace" else sys.executable
    repeats, warmup = calls
    command = [python, str(Path(__file__).resolve()), "worker", package, "--structure", str(structure),
               "--model", json.dumps({"file": str(model)}), "--dtype", dtype, "--repeats", str(repeats),
               "--warmup", str(warmup), "--threads", str(args.threads), "--workdir", str(model.parent),
               *(["--compile"] if compile else [])]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=HERE / "peers")
    if done.returncode != 0:
        raise RuntimeError(f"{package} worker failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["times_ms"]


def merged_rows(previous: str, measured: list[list[str]]) -> tuple[list[list[str]], list[str]]:
    """The table rows of an earlier results file with the rows of ``measured`` (same model, system,
    dtype and eqcalc variant) replacing theirs, and the earlier file's commands."""
    lines = previous.splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| model |")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table]
    new = {tuple(row[:4]): row for row in measured}
    merged = [new.pop(tuple(row[:4]), row) for row in rows] + list(new.values())
    order = [list(MODELS), list(SYSTEMS.values()), ["float64", "float32"], ["eager", "compile=True"]]
    merged.sort(key=lambda row: [names.index(cell) if cell in names else len(names) for names, cell in zip(order, row)])
    commands = [line.split(": ", 1)[-1] for line in lines if line.startswith(("command: ", "rows not measured"))]
    return merged, commands


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
    parser.add_argument("--large-repeats", type=int, default=2, help=f"timed calls on structures of {LARGE}+ atoms")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", nargs="*", choices=list(MODELS), default=[], metavar="MODEL",
                        help="models also timed with eqcalc compile=True (one worker per case and dtype)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--update", action="store_true", help="replace only the measured rows of --out, keep the rest")
    parser.add_argument("--out", default=str(HERE / "results" / "mace_import_speed.md"))
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        print("mace-torch peer venv absent: run `bash benchmarks/peers/setup_env.sh mace` first.", file=sys.stderr)
        return 2
    import ase.io
    from common import header, markdown_table

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        frames = structures(workdir)
        built = build_models(workdir, frames)
        agreement = "; ".join(built[name][2] for name in MODELS)
        print(agreement, flush=True)
        for model_name in args.models:
            mace_file, eqcalc_file, _ = built[model_name]
            for name, structure in frames.items():
                if name not in {SYSTEMS[key] for key in args.systems}:
                    continue
                large = len(ase.io.read(structure)) >= LARGE
                rounds, calls = (1, (args.large_repeats, 1)) if large else (args.rounds, (args.repeats, args.warmup))
                for dtype in ("float64", "float32"):
                    times = {"eqcalc": [], "mace": []}
                    for _ in range(rounds):
                        times["eqcalc"] += time_side("eqcalc", eqcalc_file, structure, dtype, calls, args)
                        times["mace"] += time_side("mace", mace_file, structure, dtype, calls, args)
                    mace_ms = statistics.median(times["mace"])
                    variants = [("eager", statistics.median(times["eqcalc"]))]
                    if model_name in args.compile:
                        compiled = time_side("eqcalc", eqcalc_file, structure, dtype, calls, args, True)
                        variants.append(("compile=True", statistics.median(compiled)))
                    for mode, eqcalc_ms in variants:
                        rows.append([model_name, name, dtype, mode, f"{mace_ms:.0f}", f"{eqcalc_ms:.0f}",
                                     f"{mace_ms / eqcalc_ms:.1f}x"])
                        print(rows[-1], flush=True)
    commands = []
    if args.update and Path(args.out).is_file():
        rows, commands = merged_rows(Path(args.out).read_text(), rows)
    table = markdown_table(COLUMNS, rows)
    text = "\n".join([
        "# Imported MACE model: eqcalc vs MACECalculator",
        "",
        "```", header(), *(f"rows not measured by that command, from an earlier run: {c}" for c in commands), f"rounds {args.rounds} x repeats {args.repeats} (warm-up {args.warmup}); structures of "
        f"{LARGE}+ atoms: 1 x {args.large_repeats} (warm-up 1); {args.threads} threads", "```",
        "",
        "Models: ScaleShiftMACE 128x0e+128x1o, max_ell 3, correlation 3, 2 residual interactions, 89 elements, "
        "r_max 6 Å, radial MLP [64, 64, 64], MLP 16x0e, random weights; MPA-0-like adds ZBL pair repulsion and "
        "the Agnesi distance transform. The same file on both sides (eqcalc: `eqcalc.import_mace`). Median ms per "
        "energy+forces+stress call; ratio = MACE ms / eqcalc ms. MACECalculator eager (its default); eqcalc "
        "eager, or compile=True (compiled on the untimed warm-up call) against the same eager MACE times.",
        "",
        "Imported model vs MACECalculator, float64, largest relative error over the structures below "
        f"{LARGE} atoms: " + agreement + ".",
        "",
        table,
        "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
