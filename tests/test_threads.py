"""Threads: building calculators concurrently works; sharing one calculator raises instead of mixing results."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from ase.build import molecule

import eqcalc

CONCURRENT_BUILDS = """
import threading, torch, eqcalc
from ase.build import molecule
errors, energies = [], {}
def work(seed):
    try:
        torch.manual_seed(seed)
        model = eqcalc.build_model("mace", species=[1, 6, 8], num_channels=8, max_L=1).double()
        atoms = molecule("CH3CH2OH")
        atoms.calc = eqcalc.EquivariantCalculator(model)
        energies[seed] = atoms.get_potential_energy()
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
[t.start() for t in threads]; [t.join() for t in threads]
assert not errors, errors
print(len(energies))
"""


def test_calculators_built_at_once_in_threads():
    """First kernel load and radial-spline tabulation (torch.func.jvp) in three threads at once:
    in a fresh process, so the kernels are loaded there for the first time."""
    result = subprocess.run([sys.executable, "-c", CONCURRENT_BUILDS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "3"


def test_one_calculator_used_by_two_threads_raises():
    torch.manual_seed(0)
    model = eqcalc.build_model("schnet", species=[1, 6, 8], num_features=8, num_interactions=1).double()
    calc = eqcalc.EquivariantCalculator(model)
    first = molecule("CH3CH2OH")
    first.positions[0] += 0.05
    expected = eqcalc.EquivariantCalculator(model).get_potential_energy(first)
    inside, release = threading.Event(), threading.Event()
    original = calc._evaluate

    def slow_evaluate(*args, **kwargs):  # holds the calculation open until the other thread has tried
        inside.set()
        release.wait(30)
        return original(*args, **kwargs)

    calc._evaluate = slow_evaluate
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("energy", calc.get_potential_energy(first)))
    worker.start()
    assert inside.wait(30)
    other = molecule("CH3CH2OH")
    other.positions += 0.01
    with pytest.raises(RuntimeError, match="another thread was using the same calculator"):
        calc.calculate(other, ["energy"])
    release.set()
    worker.join()
    np.testing.assert_allclose(results["energy"], expected, rtol=0, atol=1e-10)


def test_model_setup_waits_for_evaluations_and_holds_new_ones_back():
    from eqcalc.models.setup_lock import SetupLock

    lock, order = SetupLock(), []
    evaluating, setting_up = threading.Event(), threading.Event()

    def evaluation(name, started=None):
        with lock.shared():
            if started:
                started.set()
                setting_up.wait(5)
                time.sleep(0.05)  # the set-up is waiting now, and must still be waiting
            order.append(name)

    def setup():
        setting_up.set()
        with lock.exclusive(), lock.exclusive(), lock.shared():  # re-entrant; its own evaluations pass
            order.append("setup")

    first = threading.Thread(target=evaluation, args=("first", evaluating))
    first.start()
    evaluating.wait(5)
    builder = threading.Thread(target=setup)
    builder.start()
    setting_up.wait(5)
    time.sleep(0.02)
    late = threading.Thread(target=evaluation, args=("late",))  # arrives while the set-up waits
    late.start()
    for thread in (first, builder, late):
        thread.join(10)
    assert order == ["first", "setup", "late"]
