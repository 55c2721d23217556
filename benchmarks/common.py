"""Shared helpers for benchmark scripts: environment header, timing, tables."""

from __future__ import annotations

import platform
import shlex
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch


def header() -> str:
    """The exact command and the versions that produced a table."""
    import ase
    import e3nn
    import matscipy

    import eqcalc

    command = " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1]] + sys.argv)
    return "\n".join(
        [
            f"command: {command}",
            f"eqcalc {eqcalc.__version__}, torch {torch.__version__}, e3nn {e3nn.__version__}, "
            f"ase {ase.__version__}, matscipy {matscipy.__version__}, numpy {np.__version__}, "
            f"python {platform.python_version()}",
            f"cpu: {platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}",
        ]
    )


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``function()`` in ms after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

