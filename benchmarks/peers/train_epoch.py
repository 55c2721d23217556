"""Training throughput side by side: seconds per training epoch of eqcalc's own Trainer against
mace-torch's own training code, MACE models of the same size, on CPU or CUDA.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/train_epoch.py --batches 3 --rounds 1   # smoke, CPU
    .venv/bin/python benchmarks/peers/train_epoch.py --device cuda --rounds 3 --batches 40 \\
        --output benchmarks/results/train_epoch_cuda.md                                       # GPU

Runs in eqcalc's venv; the MACE side runs in its own interpreter (``--mace-python``, default
benchmarks/peers/.venv/mace/bin/python or $EQCALC_MACE_PYTHON; ``--mace-pythonpath`` or
$EQCALC_MACE_PYTHONPATH is put first on that worker's PYTHONPATH, e.g. a folder holding mace-torch
and e3nn 0.4.4 where no venv can be made).

Cases: every (model, data set, dtype, threads) on one ``--device``.

Data files: ``../shared/data`` beside the repository, or ``$EQCALC_BENCH_DATA`` (holding rmd17/ and mlearn/).

- Data: rMD17 ethanol, eqcalc's split (``valid_count: 50``, seed 0: 950 training frames), batch 5;
  mlearn Si (periodic, energies, forces and stress), all 214 training frames, batch 4 (``valid``:
  Si_test, never evaluated). The training frames are chosen once by
  ``eqcalc.train.data.load_training_data`` with the eqcalc worker's own config and written to an
  extxyz file (REF_energy / REF_forces / REF_stress) that the MACE worker reads, so both train on
  the same frames. ``--batches N`` keeps N batches' worth of them (eqcalc's ``train_count``, a
  seeded random subset) and the time is extrapolated to the full epoch (below).
- Models: MACE 32x0e+32x1o and 64x0e+64x1o, l_max 3, correlation 3, 2 layers, 8 Bessel functions,
  radial MLP 3×64, readout MLP 16, cutoff 5 Å (compare.py's MACE settings); random weights, seed 0;
  the parameter counts of both sides are in the table.
- Training: energy-per-atom + force-component (+ stress-component for Si) MSE, weights 1, 10, 1;
  Adam with AMSGrad (eqcalc: AdamW with weight decay 0, mace: Adam, its AMSGrad default), lr 0.01,
  no weight decay, no EMA, no gradient clipping, no learning-rate schedule and no validation.
- eqcalc worker (``eqcalc_train_worker.py``): ``eqcalc.train.Trainer`` built from a TrainConfig as
  ``eqcalc train`` builds it (data loading with the graphs built once, statistics, model, optimiser,
  DataLoader with ``collate``); on CPU its default ``kernels: true`` (the CPU kernels), on CUDA the
  torch path (the kernels are CPU-only; the table's "eqcalc path" column says which ran).
- MACE worker (``mace_train_worker.py``): as ``mace_run_train`` does it (see that file):
  ``load_from_xyz``, ``AtomicData.from_config`` (the graphs built once), mace's torch_geometric
  DataLoader, ScaleShiftMACE with residual interaction blocks (``mace_worker.py``), ``get_loss_fn``,
  ``get_optimizer``.

What is timed: one call of each package's epoch function, ``Trainer.train_epoch`` and
``mace.tools.train.train_one_epoch``, from before the first batch is drawn from the DataLoader to
after the last optimiser step (CUDA synchronised at both ends): per batch, collating the graphs
into a batch (the data loader; neighbour lists are built once before training by both codes, as
in a real run), moving it to the device, forward with forces (+ stress), loss, backward, optimiser
step, and each code's per-step bookkeeping (eqcalc: divergence check; mace: a metrics line per step
to a file). Not timed: start-up, data loading, graph building, statistics and ``--warmup`` untimed
training steps (default 3) per worker. The two workers of a case stay alive for all its rounds and
take turns (eqcalc epoch, mace epoch, eqcalc epoch, …, ``--rounds`` each; the other one waits
idle); the table gives the median over rounds of

    s/epoch = seconds of the timed pass × epoch frames / frames the pass trained on

(epoch frames: 950 ethanol, 214 Si). That is the measured time for a full epoch without
``--batches`` (mace's DataLoader drops the last incomplete batch, so its Si pass trains on 212 of 214
frames and is scaled by 214/212), and the extrapolation of N batches with ``--batches N``.

Writes the Markdown report to ``--output`` (default benchmarks/results/train_epoch_<device>.md)
after every case, so an interrupted run keeps the cases done.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ase.io
from ase import Atoms

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = Path(os.environ.get("EQCALC_BENCH_DATA") or REPO.parent / "shared" / "data")  # rmd17/, mlearn/
sys.path.insert(0, str(HERE.parent))
from common import markdown_table  # noqa: E402  (benchmarks/common.py)
from compare import MACE_COMMON_EQCALC, MACE_COMMON_PEER, WorkerFailed, eqcalc_source  # noqa: E402
from train_timing import PREFIX  # noqa: E402

from eqcalc.atomic_io import atomic_path  # noqa: E402
from eqcalc.train.config import TrainConfig  # noqa: E402
from eqcalc.train.data import load_training_data  # noqa: E402

CUTOFF = 5.0
LR = 0.01
WEIGHTS = {"energy_weight": 1.0, "forces_weight": 10.0, "stress_weight": 1.0}
_EQCALC_MACE = {k: v for k, v in MACE_COMMON_EQCALC.items() if k != "family"}
MODELS = {  # name -> (eqcalc mace hyper, mace_worker.py model keys)
    "mace-32x0e+32x1o": ({**_EQCALC_MACE, "num_channels": 32, "max_L": 1}, {**MACE_COMMON_PEER, "hidden_irreps": "32x0e+32x1o"}),
    "mace-64x0e+64x1o": ({**_EQCALC_MACE, "num_channels": 64, "max_L": 1}, {**MACE_COMMON_PEER, "hidden_irreps": "64x0e+64x1o"}),
}
SETS = {  # name -> training file, batch size, how eqcalc holds out its validation frames, stress labels
    "ethanol": {"file": DATA / "rmd17" / "ethanol_train.extxyz", "batch": 5, "split": {"valid_count": 50}, "stress": False},
    "Si": {"file": DATA / "mlearn" / "Si_train.extxyz", "batch": 4,
           "split": {"valid": str(DATA / "mlearn" / "Si_test.extxyz")}, "stress": True},
}  # fmt: skip


# ---------------------------------------------------------------- the workers


class Worker:
    """One worker subprocess speaking train_timing.py's line protocol; its stderr (and any stdout
    outside the protocol) goes to ``log``."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path, timeout: float):
        self.name, self.log_path, self.timeout = name, log, timeout
        self.log = open(log, "w")
        self.log.write("$ " + " ".join(shlex.quote(c) for c in command) + "\n")
        self.log.flush()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, env=env, bufsize=1)  # fmt: skip
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                self.messages.put(json.loads(line[len(PREFIX):]))
            else:
                self.log.write(line)
                self.log.flush()
        self.messages.put(None)  # end of output: the worker exited

    def receive(self) -> dict:
        try:
            message = self.messages.get(timeout=self.timeout)
        except queue.Empty:
            self.process.kill()
            raise WorkerFailed(f"no answer within {self.timeout:.0f} s") from None
        if message is None:
            code = self.process.wait()
            raise WorkerFailed(f"exited with code {code}: {self.last_line()}")
        return message

    def request(self, command: str) -> dict:
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: receive() says how
        return self.receive()

    def last_line(self) -> str:
        self.log.flush()
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines()
                 if line.strip() and not line.startswith("$ ")]  # not the command line the log starts with
        return lines[-1].strip() if lines else ""

    def print_log(self) -> None:
        """The worker's whole log (its traceback) on stderr."""
        self.log.flush()
        print(f"----- {self.name} worker log ({self.log_path}) -----\n{self.log_path.read_text(errors='replace')}"
              f"----- end of {self.name} worker log -----", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.close()


def worker_env(threads: int, pythonpath: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p)
    return env


# ---------------------------------------------------------------- one case


def eqcalc_config(set_name: str, model_name: str, train_count: int | None) -> dict:
    """The TrainConfig options of the eqcalc side (the worker adds dtype, device, seed, output)."""
    data = SETS[set_name]
    return {
        "train": str(data["file"]), **data["split"], "train_count": train_count,
        "model": {"family": "mace", "cutoff": CUTOFF, "hyper": MODELS[model_name][0]},
        "batch_size": data["batch"], "lr": LR, "weight_decay": 0.0, "amsgrad": True, "scheduler": "none",
        "clip_grad_norm": None, "ema_decay": None, "kernels": True, **WEIGHTS,
    }  # fmt: skip


def labelled_atoms(structure) -> Atoms:
    """ASE frame of an eqcalc LabelledStructure, labels under REF_energy / REF_forces / REF_stress."""
    atoms = Atoms(numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    atoms.info["REF_energy"] = structure.energy
    atoms.arrays["REF_forces"] = structure.forces
    if structure.stress is not None:
        atoms.info["REF_stress"] = structure.stress  # 3×3, eV/Å³, ASE sign
    return atoms


def training_frames(set_name: str, batches: int | None, args) -> tuple[Path, int, int | None]:
    """(extxyz of the frames eqcalc trains on, frames of the full epoch, eqcalc's train_count)."""
    key = (set_name, batches)
    if key not in args.frames:
        full = load_training_data(TrainConfig.from_dict({**eqcalc_config(set_name, "mace-32x0e+32x1o", None), "seed": args.seed}))
        epoch_frames = len(full.train)
        count = batches * SETS[set_name]["batch"] if batches is not None else None
        if count is not None and count >= epoch_frames:
            count = None
        data = full if count is None else load_training_data(
            TrainConfig.from_dict({**eqcalc_config(set_name, "mace-32x0e+32x1o", count), "seed": args.seed}))
        path = args.scratch / f"{set_name}-{count or 'all'}.extxyz"
        with atomic_path(path) as temp:
            ase.io.write(temp, [labelled_atoms(s) for s in data.train.structures], format="extxyz")
        args.frames[key] = (path, epoch_frames, count)
    return args.frames[key]


def run_case(model_name: str, set_name: str, dtype: str, threads: int, args) -> dict:
    frames, epoch_frames, count = training_frames(set_name, args.batches, args)
    data = SETS[set_name]
    mace_config = {"frames": str(frames), "batch_size": data["batch"], "lr": LR, "cutoff": CUTOFF,
                   "stress": data["stress"], "model": MODELS[model_name][1], **WEIGHTS}  # fmt: skip
    common = ["--dtype", dtype, "--device", args.device, "--threads", str(threads), "--warmup", str(args.warmup),
              "--seed", str(args.seed)]  # fmt: skip
    tag = f"{model_name}-{set_name}-{dtype}-{threads}t"
    specs = {
        "eqcalc": ([sys.executable, str(HERE / "eqcalc_train_worker.py"), "--config",
                    json.dumps(eqcalc_config(set_name, model_name, count))], worker_env(threads)),
        "mace": ([args.mace_python, str(HERE / "mace_train_worker.py"), "--config", json.dumps(mace_config)],
                 worker_env(threads, args.mace_pythonpath)),
    }  # fmt: skip
    sides = {name: {"rounds": [], "ready": None, "error": None} for name in specs}
    workers = {}
    try:
        for name, (command, env) in specs.items():  # started together: their set-up and warm-up are not timed
            workdir = args.scratch / f"{tag}-{name}"
            workdir.mkdir()
            workers[name] = Worker(name, command + common + ["--workdir", str(workdir)], env,
                                   args.scratch / f"{tag}-{name}.log", args.timeout)  # fmt: skip
        for name, worker in workers.items():
            try:
                sides[name]["ready"] = worker.receive()
            except WorkerFailed as error:
                sides[name]["error"] = str(error)
                worker.print_log()
        for _ in range(args.rounds):
            for name, worker in workers.items():
                if sides[name]["error"]:
                    continue
                try:
                    answer = worker.request("epoch")
                except WorkerFailed as error:
                    sides[name]["error"] = str(error)
                    worker.print_log()
                    continue
                answer["s_per_epoch"] = answer["seconds"] * epoch_frames / answer["frames"]
                sides[name]["rounds"].append(answer)
                print(f"  {tag} {name}: {answer['seconds']:.3f} s for {answer['steps']} steps / {answer['frames']} frames "
                      f"→ {answer['s_per_epoch']:.3f} s/epoch", file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    for name in sides:
        ready = sides[name]["ready"]
        if ready:
            print(f"  {tag} {name}: {ready['num_params']:,} parameters, {ready['batches']} batches of the timed pass, "
                  f"{ready['path']}", file=sys.stderr, flush=True)
    return {"model": model_name, "set": set_name, "dtype": dtype, "threads": threads, "sides": sides,
            "epoch_frames": epoch_frames, "count": count}  # fmt: skip


# ---------------------------------------------------------------- the report


def seconds_cell(side: dict) -> str:
    if side["error"] and not side["rounds"]:
        return "failed: " + side["error"].replace("|", "/")[:160]
    values = [r["s_per_epoch"] for r in side["rounds"]]
    if not values:
        return "—"
    text = f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else "")
    return text + (" (then failed)" if side["error"] else "")


def row(case: dict, device: str) -> list[str]:
    eq, mace = case["sides"]["eqcalc"], case["sides"]["mace"]
    ratio = "—"
    if eq["rounds"] and mace["rounds"]:
        median = {k: statistics.median(r["s_per_epoch"] for r in s["rounds"]) for k, s in (("eq", eq), ("mace", mace))}
        ratio = f"{median['mace'] / median['eq']:.2f}"
    params = " / ".join(f"{s['ready']['num_params']:,}" if s["ready"] else "—" for s in (eq, mace))
    batch = SETS[case["set"]]["batch"]
    full_batches = -(-case["epoch_frames"] // batch)
    if case["count"] is None:
        timed = "full epoch"
    else:
        timed = f"{case['count'] // batch} of {full_batches} batches, extrapolated"
    cells = [case["model"], f"{case['set']} ({case['epoch_frames']} frames, batch {batch})", case["dtype"],
             str(case["threads"]), timed, seconds_cell(eq), seconds_cell(mace), ratio, params,
             eq["ready"]["path"] if eq["ready"] else "—"]  # fmt: skip
    if device == "cuda":
        cells.append(" / ".join(f"{max(r['peak_mib'] for r in s['rounds']):.0f}" if s["rounds"] else "—" for s in (eq, mace)))
    return cells


def report(cases: list[dict], args, elapsed: float) -> str:
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv)
    lines = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, host: {platform.node()}, "
        f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        f"- command: `{command}`",
        f"- eqcalc source: {eqcalc_source()}",
    ]
    for name in ("eqcalc", "mace"):
        ready = next((c["sides"][name]["ready"] for c in cases if c["sides"][name]["ready"]), None)
        if ready:
            versions = ", ".join(f"{k} {v}" for k, v in ready["versions"].items())
            lines.append(f"- {name} worker: {versions}; {ready['notes']}")
        else:
            lines.append(f"- {name} worker: no successful start")
    device = next((s["ready"]["device_name"] for c in cases for s in c["sides"].values() if s["ready"]), args.device)
    lines += [
        f"- device: {args.device}: {device}; threads per worker: torch.set_num_threads, OMP_NUM_THREADS, MKL_NUM_THREADS",
        f"- protocol: {args.rounds} rounds per case, eqcalc and mace epochs alternating in two long-lived workers, "
        f"{args.warmup} untimed warm-up steps each; median (min–max) over rounds of s/epoch = timed seconds × "
        "epoch frames / frames trained in the timed pass (see train_epoch.py's docstring for what is timed)",
        "- training: E/atom + F (+ σ for Si) MSE, weights 1 / 10 / 1, Adam(W) with AMSGrad, lr 0.01, no weight "
        "decay, EMA, clipping or validation; random weights, seed 0; cutoff 5 Å",
        f"- elapsed: {elapsed:.0f} s",
    ]
    columns = ["model", "data (epoch)", "dtype", "threads", "timed", "eqcalc s/epoch", "mace s/epoch", "mace/eqcalc",
               "params eqcalc / mace", "eqcalc path"]  # fmt: skip
    if args.device == "cuda":
        columns.append("peak GPU MiB eqcalc / mace")
    table = markdown_table(columns, [row(case, args.device) for case in cases])
    return "\n\n".join(["# Training epoch: eqcalc vs mace-torch, seconds per epoch", "\n".join(lines), table]) + "\n"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1], help="torch threads per worker (each value a case)")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per side per case, alternating")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps per worker before the first epoch")
    parser.add_argument("--batches", type=int, help="time N batches per pass and extrapolate to the epoch (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="s to wait for any one answer of a worker")
    parser.add_argument("--mace-python", default=os.environ.get("EQCALC_MACE_PYTHON", str(HERE / ".venv" / "mace" / "bin" / "python")),
                        help="interpreter of the MACE worker (default: $EQCALC_MACE_PYTHON or peers/.venv/mace)")
    parser.add_argument("--mace-pythonpath", default=os.environ.get("EQCALC_MACE_PYTHONPATH"),
                        help="put first on the MACE worker's PYTHONPATH (default: $EQCALC_MACE_PYTHONPATH)")
    parser.add_argument("--output", type=Path, help="Markdown report (default: benchmarks/results/train_epoch_<device>.md)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0 or (args.batches is not None and args.batches < 1):
        parser.error("--rounds and --batches must be ≥ 1, --warmup ≥ 0.")
    if os.sep in args.mace_python and not Path(args.mace_python).exists():
        parser.error(f"no MACE interpreter at {args.mace_python}: bash benchmarks/peers/setup_env.sh mace, or --mace-python")
    if args.output is None:
        args.output = HERE.parent / "results" / f"train_epoch_{args.device}.md"
    return args


def main() -> None:
    args = parse_arguments()
    start = time.perf_counter()
    cases = []
    with tempfile.TemporaryDirectory(prefix="eqcalc-train-epoch-") as scratch:
        args.scratch, args.frames = Path(scratch), {}
        for threads in args.threads:
            for dtype in args.dtypes:
                for set_name in args.sets:
                    for model_name in args.models:
                        print(f"{model_name} {set_name} {dtype} {threads} thread(s) on {args.device} "
                              f"[{time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
                        cases.append(run_case(model_name, set_name, dtype, threads, args))
                        print("| " + " | ".join(row(cases[-1], args.device)) + " |", file=sys.stderr, flush=True)
                        text = report(cases, args, time.perf_counter() - start)
                        args.output.parent.mkdir(parents=True, exist_ok=True)
                        with atomic_path(args.output) as temp:
                            temp.write_text(text)
    print(text)
    print(f"written to {args.output} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
