"""Settings of a molecular-dynamics run, with checks and YAML round-trip."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..atomic_io import atomic_path

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
VELOCITIES = ("maxwell-boltzmann", "structure")
UNCERTAINTY_ACTIONS = ("stop", "save")


@dataclass
class MDConfig:
    """Everything that defines an MD run (units: fs, K, GPa, eV/Å, Å).

    Attributes:
        ensemble: "nve" (velocity Verlet), "nvt" (see ``thermostat``) or "npt"
            (isotropic Martyna–Tobias–Klein barostat with a Nosé–Hoover chain; periodic cells only).
        thermostat: for NVT, "langevin", "bussi" (stochastic velocity rescaling) or "nose-hoover" (chain).
        timestep: fs.
        steps: total number of steps of the run (a resumed run continues up to this step).
        temperature: K; thermostat target, and the temperature of the initial Maxwell–Boltzmann velocities.
        friction: Langevin friction, 1/fs.
        tau_t: thermostat time constant (Bussi, Nosé–Hoover, NPT), fs; None means 100 timesteps.
        pressure: NPT target pressure, GPa.
        tau_p: NPT barostat time constant, fs; None means 1000 timesteps.
        seed: random seed for initial velocities and stochastic thermostats; None draws one (and records it).
        velocities: "maxwell-boltzmann" (centre-of-mass momentum removed) or "structure" (keep the
            momenta stored with the structure; zero if it has none).
        log_interval: steps between rows of the CSV log.
        traj_interval: steps between trajectory frames (the last step is always saved).
        max_force: stop when any atom's force exceeds this, eV/Å.
        min_distance: stop when two atoms come closer than this, Å.
        max_temperature: stop when the temperature exceeds this, K; None means max(10 × temperature, 1000 K).
        skin: neighbour-list skin, Å.
        bond_factor: opt-in fragment guard (None: off): atoms closer than this × the sum of their
            covalent radii are bonded, and the run stops when it has more bonded fragments than at
            its start (checked every log_interval steps); 1.3–1.5 suits most molecules.
        max_force_uncertainty: opt-in limit on a committee's force spread, eV/Å (None: off; needs a
            committee of two models or more): the largest per-atom ``forces_std`` of a step above it
            triggers ``uncertainty_action``.
        uncertainty_action: "stop" (end the run there, like the other limits) or "save" (append
            the step's structure to ``uncertain.extxyz`` in the run folder and carry on).
    """

    ensemble: str = "nvt"
    thermostat: str = "langevin"
    timestep: float = 0.5
    steps: int = 1000
    temperature: float = 300.0
    friction: float = 0.01
    tau_t: float | None = None
    pressure: float = 0.0
    tau_p: float | None = None
    seed: int | None = None
    velocities: str = "maxwell-boltzmann"
    log_interval: int = 10
    traj_interval: int = 10
    max_force: float = 50.0
    min_distance: float = 0.5
    max_temperature: float | None = None
    skin: float = 0.5
    bond_factor: float | None = None
    max_force_uncertainty: float | None = None
    uncertainty_action: str = "stop"

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            kind = {"float": float, "int": int}.get(item.type.split(" |")[0])
            value = getattr(self, item.name)
            if value is None and "None" not in item.type:
                raise ValueError(f"{item.name} needs a value.")
            if kind is None or value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{item.name} must be a number, got {value!r}.") from None
            if kind is int and not number.is_integer():
                raise ValueError(f"{item.name} must be a whole number, got {value!r}.")
            setattr(self, item.name, int(number) if kind is int else number)
        self.validate()

    @property
    def thermostat_time(self) -> float:
        """Thermostat time constant in fs."""
        return self.tau_t if self.tau_t is not None else 100.0 * self.timestep

    @property
    def barostat_time(self) -> float:
        """Barostat time constant in fs."""
        return self.tau_p if self.tau_p is not None else 1000.0 * self.timestep

    @property
    def temperature_limit(self) -> float:
        """Temperature (K) above which the run is stopped as runaway."""
        if self.max_temperature is not None:
            return self.max_temperature
        return max(10.0 * self.temperature, 1000.0)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting and what would be accepted."""
        choices = {"ensemble": ENSEMBLES, "thermostat": THERMOSTATS, "velocities": VELOCITIES,
                   "uncertainty_action": UNCERTAINTY_ACTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}.")
        positive = ["timestep", "steps", "friction", "log_interval", "traj_interval", "max_force", "tau_t", "tau_p",
                    "max_temperature", "bond_factor", "max_force_uncertainty"]
        for name in positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        for name in ("min_distance", "skin"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0 K, got {self.temperature}.")
        if self.ensemble != "nve" and self.temperature == 0:
            raise ValueError(f"{self.ensemble.upper()} needs a target temperature above 0 K.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MDConfig":
        """Build from a dict (for example a YAML file), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown MD settings {unknown}; known settings are {sorted(known)}.")
        return cls(**values)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file gives {})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r} must hold a YAML mapping of setting: value, not {type(values).__name__}.")
    return values


def write_yaml(values: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a mapping to ``path`` atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        yaml.safe_dump(values, handle, sort_keys=False)
