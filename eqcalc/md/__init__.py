"""Molecular dynamics and geometry optimisation with eqcalc models.

    from eqcalc.md import run, relax, read_trajectory
    result = run(atoms, "model.pt", ensemble="nvt", temperature=300, timestep=0.5, steps=2000, output="md_run")
    result = run(None, None, steps=4000, output="md_run", resume=True)      # continue / extend
    relaxed = relax(atoms, "model.pt", cell=True, fmax=0.01, output="relax_run").atoms
    frames = read_trajectory("md_run/trajectory.h5")                         # positions (F, N, 3), ...
"""

from .config import MDConfig
from .relax import RelaxResult, relax
from .run import MDResult, run
from .trajectory import Trajectory, export_trajectory, read_trajectory, repair_trajectory

__all__ = ["MDConfig", "MDResult", "RelaxResult", "Trajectory", "export_trajectory", "read_trajectory", "relax",
           "repair_trajectory", "run"]
