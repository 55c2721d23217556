"""Figures for the plots runs write, with matplotlib optional (the ``plots`` extra).

Figures are made without pyplot (no display, no global backend change). Where matplotlib is not
installed, :func:`new_figure` warns once and returns None, and the callers skip their plot: a
run's data files never depend on it.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

INSTALL_HINT = 'pip install "eqcalc[plots]" (matplotlib)'


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a module set to None in sys.modules
        return False


@functools.cache
def _warn_missing() -> None:
    warnings.warn(f"matplotlib is not installed, so no plots are drawn; {INSTALL_HINT} to get them.", stacklevel=3)


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure(**kwargs)``, or None (with a one-time warning) without matplotlib."""
    if not available():
        _warn_missing()
        return None
    from matplotlib.figure import Figure

    return Figure(**kwargs)
