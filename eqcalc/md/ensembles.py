"""ASE integrators for each ensemble, and their internal state as plain arrays.

The state (random-number generator, thermostat and barostat variables) is what a
run must store next to positions and velocities to be resumed exactly. It reads
the integrators' private attributes, which is why it lives in one place.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.verlet import VelocityVerlet

from .config import MDConfig

_WORD = (1 << 64) - 1


def build_dynamics(atoms: Atoms, config: MDConfig, rng: np.random.Generator) -> MolecularDynamics:
    """The ASE integrator of ``config`` acting on ``atoms`` (positions and momenta already set)."""
    dt = config.timestep * units.fs
    if config.ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if config.ensemble == "npt":
        if not atoms.pbc.all():
            raise ValueError(
                f"NPT needs a cell periodic in all three directions; this structure has pbc={atoms.pbc.tolist()}. "
                "Use nvt/nve, or give the structure a periodic cell."
            )
        return IsotropicMTKNPT(
            atoms, dt, temperature_K=config.temperature, pressure_au=config.pressure * units.GPa,
            tdamp=config.thermostat_time * units.fs, pdamp=config.barostat_time * units.fs,
        )
    if config.thermostat == "langevin":
        return Langevin(
            atoms, dt, temperature_K=config.temperature, friction=config.friction / units.fs, fixcm=False, rng=rng
        )
    if config.thermostat == "bussi":
        return Bussi(atoms, dt, temperature_K=config.temperature, taut=config.thermostat_time * units.fs, rng=rng)
    return NoseHooverChainNVT(atoms, dt, temperature_K=config.temperature, tdamp=config.thermostat_time * units.fs)


def centre_of_mass_constraint(config: MDConfig) -> list[FixCom]:
    """Constraints to put on the atoms before building the integrator: ASE's FixCom where the
    integrator supports it. The Nosé–Hoover family does not; there the centre-of-mass momentum,
    zero at the start, stays zero because the thermostat scales all momenta alike."""
    stochastic_or_nve = config.ensemble == "nve" or config.thermostat in ("langevin", "bussi")
    return [FixCom()] if config.ensemble != "npt" and stochastic_or_nve else []


def encode_rng(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's complete state as (6,) uint64."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"Only PCG64 generators can be saved, got {state['bit_generator']}.")
    inner = state["state"]
    return np.array(
        [inner["state"] >> 64, inner["state"] & _WORD, inner["inc"] >> 64, inner["inc"] & _WORD,
         state["has_uint32"], state["uinteger"]],
        dtype=np.uint64,
    )


def decode_rng(words: np.ndarray, rng: np.random.Generator) -> None:
    """Set ``rng`` (PCG64) to the state :func:`encode_rng` produced."""
    w = [int(x) for x in words]
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }


def integrator_state(dyn: MolecularDynamics) -> dict[str, np.ndarray]:
    """Internal state of ``dyn`` beyond positions, momenta and cell, as named arrays of fixed shape."""
    state: dict[str, np.ndarray] = {}
    if isinstance(dyn, (Langevin, Bussi)):
        state["rng"] = encode_rng(dyn.rng)
    if isinstance(dyn, Bussi):
        state["transferred_energy"] = np.array(dyn.transferred_energy, dtype=np.float64)
    thermostat = getattr(dyn, "_thermostat", None)
    if thermostat is not None:
        state["thermostat_eta"] = thermostat._eta.copy()
        state["thermostat_p_eta"] = thermostat._p_eta.copy()
    if isinstance(dyn, IsotropicMTKNPT):
        state["barostat_xi"] = dyn._barostat._xi.copy()
        state["barostat_p_xi"] = dyn._barostat._p_xi.copy()
        state["volume_momentum"] = np.array(dyn._p_eps, dtype=np.float64)
    return state


def restore_integrator_state(dyn: MolecularDynamics, state: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`integrator_state` on a freshly built integrator of the same kind.

    For NPT the strain variable restarts at 0 relative to the restored cell, which is the same
    dynamics (the cell is the reference cell times exp(ε)).
    """
    expected = set(integrator_state(dyn))
    if set(state) != expected:
        raise ValueError(
            f"Saved integrator state has {sorted(state)}, but this integrator needs {sorted(expected)}; "
            "the run was started with different settings."
        )
    if "rng" in state:
        decode_rng(state["rng"], dyn.rng)
    if "transferred_energy" in state:
        dyn.transferred_energy = float(state["transferred_energy"])
    if "thermostat_eta" in state:
        dyn._thermostat._eta[:] = state["thermostat_eta"]
        dyn._thermostat._p_eta[:] = state["thermostat_p_eta"]
    if "barostat_xi" in state:
        dyn._barostat._xi[:] = state["barostat_xi"]
        dyn._barostat._p_xi[:] = state["barostat_p_xi"]
        dyn._p_eps = float(state["volume_momentum"])
