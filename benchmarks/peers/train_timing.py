"""What the epoch-timing workers of ``train_epoch.py`` share: their command line, the line protocol
with the driver and the timed epoch. Imports only the standard library and torch, so it runs in
every venv (eqcalc's, MACE's) and on the GPU machine.

A worker builds one model (random weights, seeded), the training data and the optimiser with its
package's own training code, runs ``--warmup`` untimed training steps, then prints

    @train_epoch {"ready": true, "num_params": int, "batches": int, "frames": int, "versions": {...}, ...}

and serves the driver's commands on stdin, one per line:

- ``epoch``: one training epoch through the package's own epoch function, timed from before its
  first batch is drawn to after its last optimiser step (CUDA synchronised at both ends); answers
  ``@train_epoch {"seconds": float, "steps": int, "frames": int, "peak_mib": float | null}``;
- ``quit``: exit.

Every message of the protocol is one stdout line starting with :data:`PREFIX`; anything else the
packages print is ignored by the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata
from typing import Callable

import torch

PREFIX = "@train_epoch "


def parse_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="JSON dict: this package's side of the case (see the worker)")
    parser.add_argument("--dtype", choices=["float32", "float64"], required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before the first epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", required=True, help="scratch folder of this worker")
    args = parser.parse_args()
    args.config = json.loads(args.config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def send(message: dict) -> None:
    print(PREFIX + json.dumps(message), flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in ("torch", "numpy", "ase", "e3nn", *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu, {torch.get_num_threads()} torch threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"


def serve(run_epoch: Callable[[int], tuple[int, int]], device: torch.device, ready: dict) -> None:
    """Report ``ready``, then time ``run_epoch(epoch) -> (steps, frames)`` on each ``epoch`` command."""
    send({"ready": True, "device_name": device_name(device), **ready})
    epoch = 0
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command != "epoch":
            raise ValueError(f"unknown command {command!r}")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        steps, frames = run_epoch(epoch)
        synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        send({"seconds": seconds, "steps": steps, "frames": frames, "peak_mib": peak})
        epoch += 1
