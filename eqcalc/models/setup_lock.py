"""One process-wide lock between setting models up and running them, for threads.

e3nn's code-generated modules are traced by torch.fx whenever such a module is built or copied,
and an fx trace patches ``torch.nn.Module.__call__`` for the whole process while it runs: a module
called in another thread meanwhile is caught in the trace and fails. So building, copying, loading
and preparing a model take :data:`MODEL_SETUP_LOCK` exclusively, and evaluating one
(:func:`eqcalc.properties.compute_properties`) takes it shared: evaluations run concurrently with
each other, never during a set-up. A set-up waiting for the lock holds new evaluations back, so
threads that calculate in a loop cannot starve it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class SetupLock:
    """Exclusive for set-up (re-entrant in its thread), shared for evaluation; the thread that
    holds it exclusively may also evaluate."""

    def __init__(self):
        self._condition = threading.Condition()
        self._owner: int | None = None  # thread holding the exclusive side
        self._depth = 0  # re-entries of the owner
        self._evaluations = 0  # holders of the shared side
        self._waiting = 0  # threads waiting for the exclusive side

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._owner != me:
                self._waiting += 1
                self._condition.wait_for(lambda: self._owner is None and self._evaluations == 0)
                self._waiting -= 1
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._condition:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._condition.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._owner != me:
                self._condition.wait_for(lambda: self._owner is None and self._waiting == 0)
            self._evaluations += 1
        try:
            yield
        finally:
            with self._condition:
                self._evaluations -= 1
                if self._evaluations == 0:
                    self._condition.notify_all()


MODEL_SETUP_LOCK = SetupLock()
