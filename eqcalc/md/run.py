"""Molecular dynamics with an eqcalc model: ``eqcalc.md.run(atoms, model, ...)``.

A run writes into one folder: ``trajectory.h5`` (see :mod:`eqcalc.md.trajectory`),
``log.csv``, ``energy.png``, ``temperature.png``, ``final.extxyz`` (last state, with
momenta) and ``config.yaml`` (the settings, reused by ``resume=True``).

A run of a committee (several models: :mod:`eqcalc.committee`) follows the members' mean and
also records their spread: the per-atom ``forces_std`` in every trajectory frame, the largest of
it and the energy spread in every log row, ``uncertainty.png``, and with ``max_force_uncertainty``
either a stop at the first step above it or ``uncertain.extxyz`` (:mod:`eqcalc.md.uncertain`).
"""

from __future__ import annotations

import errno
import os
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from tqdm.auto import tqdm

from ..calculator import EquivariantCalculator, has_stress
from ..data.validation import CloseContactError
from ..models.base import AtomisticModel
from .config import MDConfig, read_yaml, write_yaml
from .ensembles import build_dynamics, centre_of_mass_constraint, integrator_state, restore_integrator_state
from .guards import FragmentGuard, Guards, UncertaintyGuard
from .log import UNCERTAINTY_PLOT, ThermoLog, plot_log
from .trajectory import DiskFullError, Frame, Trajectory, TrajectoryWriter, frame_atoms, read_trajectory
from .uncertain import UncertainFrames

TRAJECTORY_FILE = "trajectory.h5"
LOG_FILE = "log.csv"
CONFIG_FILE = "config.yaml"
FINAL_FILE = "final.extxyz"
UNCERTAIN_FILE = "uncertain.extxyz"
FS_PER_DAY_TO_NS = 86400.0 * 1e-6  # (fs of simulated time per s) → ns per day


@dataclass
class MDResult:
    """The record of a run.

    Attributes:
        output: the run folder.
        atoms: the last good state (positions, momenta, cell; energy and forces attached).
        step: the last step reached.
        steps_run: steps taken by this call (fewer than ``step`` for a resumed run).
        stop_reason: why a safety guard stopped the run, or None if it completed.
        steps_per_second, ns_per_day: speed of this call's steps (wall clock, including output).
        neighbour_fraction: share of that time spent updating and filtering the neighbour list.
        neighbour_rebuilds: neighbour-list rebuilds during this call.
        committee_size: the number of models whose mean drove the run (1: a single model).
        uncertain_frames: with ``uncertainty_action="save"``, the frames ``uncertain.extxyz`` holds
            (those of an earlier part of a resumed run included); else None.
        uncertain_saved: frames this call appended to it.
    """

    output: Path
    atoms: Atoms
    step: int
    steps_run: int
    stop_reason: str | None
    steps_per_second: float
    ns_per_day: float
    neighbour_fraction: float
    neighbour_rebuilds: int
    committee_size: int = 1
    uncertain_frames: int | None = None
    uncertain_saved: int = 0

    @property
    def completed(self) -> bool:
        return self.stop_reason is None

    @property
    def trajectory(self) -> Path:
        return self.output / TRAJECTORY_FILE

    @property
    def log(self) -> Path:
        return self.output / LOG_FILE

    @property
    def uncertain(self) -> Path:
        return self.output / UNCERTAIN_FILE


ModelArgument = AtomisticModel | str | os.PathLike | list[AtomisticModel | str | os.PathLike]


def run(
    atoms: Atoms | None,
    model: ModelArgument | None,
    config: MDConfig | None = None,
    *,
    output: str | os.PathLike = "md_run",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "cpu",
    dtype: str | None = None,
    compile: bool = False,
    **settings,
) -> MDResult:
    """Run MD of ``atoms`` with ``model`` and write the run folder ``output``.

    Args:
        atoms: the starting structure (not modified); with ``resume`` it may be None.
        model: an eqcalc model or model file, or a committee: a list of them (or whatever else
            :class:`~eqcalc.calculator.EquivariantCalculator` takes, passed on unchanged); with
            ``resume`` None reuses the file(s) recorded in the folder.
        config: the settings; or give them as keyword arguments (``ensemble="nve", timestep=1.0, ...``,
            see :class:`MDConfig`).
        output: the run folder.
        resume: continue the run in ``output`` from its last saved frame (positions, velocities,
            thermostat state, step) up to ``steps`` (which alone may be changed, to extend the run).
        overwrite: replace a run already in ``output``.
        progress: show a progress bar with steps/s and ns/day.
        device: where the model runs. CPU runs of 1000 atoms or more switch glibc to keeping
            freed memory (the calculator's ``reuse_memory``).
        dtype: the precision the model runs in (None: its own).
        compile: run the model through ``torch.compile`` (:mod:`eqcalc.compilation`): faster steps
            after a one-off compilation at the start; needs a C++ compiler on CPU. Like device and
            dtype, a setting of this call, not of the run: a resumed run may change it.

    Returns:
        The :class:`MDResult`. A run stopped by a safety guard (or, with ``max_force_uncertainty``
        and ``uncertainty_action="stop"``, by the committee's force spread) returns normally with
        ``stop_reason`` set; its trajectory ends with the last good state.
    """
    output = Path(output)
    if resume:
        config, model, previous = _resumed_settings(output, model, config, settings)
        last = previous.frame(0)
        system = _resumed_atoms(previous, last, atoms)
    else:
        if atoms is None or model is None:
            raise ValueError("A new run needs a structure and a model.")
        if atoms.constraints:
            raise ValueError("Constraints on the structure are not supported by eqcalc md yet; remove them.")
        config = _new_settings(config, settings)
        system = atoms.copy()
    calc = EquivariantCalculator(
        model, device=device, dtype=dtype, skin=config.skin, min_distance=config.min_distance, compile=compile,
        reuse_memory=True,
    )
    committee = "forces_std" in calc.implemented_properties  # a committee, or a model with a fitted uncertainty
    _check_committee(config, committee, previous if resume else None, output)
    if not resume:
        _claim_output(output, overwrite)
    model_record = _model_record(model)
    system.calc = calc
    system.set_constraint(centre_of_mass_constraint(config))
    if system.get_number_of_degrees_of_freedom() < 1:
        raise ValueError(
            f"The structure has {len(system)} atom(s) and no degree of freedom left once the centre of mass "
            "is fixed, so it has no temperature; MD needs at least 2 atoms."
        )
    rng = np.random.default_rng(config.seed)
    if not resume:
        _initial_velocities(system, config, rng)
    dynamics = build_dynamics(system, config, rng)
    if resume:
        restore_integrator_state(dynamics, last.integrator)
    start = last.step if resume else 0
    try:
        first = _snapshot(system, dynamics, start, config, committee)
    except (ValueError, FloatingPointError) as err:
        raise ValueError(f"The starting structure cannot be simulated: {err}") from err
    guards = Guards(config.max_force, config.temperature_limit)
    fragments = FragmentGuard(system, config.bond_factor) if config.bond_factor is not None else None
    uncertainty = None
    if config.max_force_uncertainty is not None:
        uncertainty = UncertaintyGuard(config.max_force_uncertainty, config.uncertainty_action)
    problem = guards.check(first.potential_energy, first.forces, system.get_temperature())
    first_spread = uncertainty.exceeded(first.forces_std) if uncertainty is not None else None
    if not problem and first_spread and uncertainty.action == "stop":
        problem = uncertainty.message(start, *first_spread)
    if problem:
        raise ValueError(f"The starting structure fails a safety check: {problem}.")
    if start >= config.steps:
        raise ValueError(f"The run in {str(output)!r} already reached step {start}; give more steps to extend it.")

    metadata = {"model": model_record, "md": config.to_dict()}
    if resume:
        writer = TrajectoryWriter.continue_file(output / TRAJECTORY_FILE, metadata)
    else:
        writer = TrajectoryWriter(
            output / TRAJECTORY_FILE, system.numbers, system.get_masses(), system.pbc, metadata, first.integrator,
            forces_std=committee,
        )
    # Only now, with the starting state checked and the trajectory opened, do the settings change.
    write_yaml({"model": model_record, **config.to_dict()}, output / CONFIG_FILE)
    saving = uncertainty is not None and uncertainty.action == "save"
    if not resume:  # a replaced run's files that this run does not write
        for stale in ([] if saving else [UNCERTAIN_FILE]) + ([] if committee else [UNCERTAINTY_PLOT]):
            (output / stale).unlink(missing_ok=True)
    periodic = has_stress(system)
    log = ThermoLog(output / LOG_FILE, periodic, resume_step=start if resume else None, committee=committee)
    uncertain = None
    if saving:  # on resume, drops the frames after the resume step: the steps recomputed now
        uncertain = UncertainFrames(output / UNCERTAIN_FILE, system.numbers, system.get_masses(), system.pbc,
                                    resume_step=start if resume else None)
    if not resume:
        writer.append(first)
        if uncertain is not None and first_spread:
            uncertain.append(first)
        _log_row(log, system, first, periodic)
    last_good, written_step, stop_reason, disk_full = first, start, None, False
    neighbour_start, rebuilds_start = calc.neighbour_seconds, calc.neighbours.num_builds
    clock = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, unit="step", disable=not progress, dynamic_ncols=True)
    try:
        for step in range(start + 1, config.steps + 1):
            try:
                dynamics.step()
                frame = _snapshot(system, dynamics, step, config, committee)
            except CloseContactError as err:  # the calculator's contact check, mid-run
                stop_reason = err.during_dynamics(step)
                break
            except (ValueError, FloatingPointError) as err:  # the calculator's finiteness checks
                stop_reason = str(err)
                break
            stop_reason = guards.check(frame.potential_energy, frame.forces, system.get_temperature())
            if not stop_reason and fragments is not None and step % config.log_interval == 0:
                stop_reason = fragments.check(system)
            spread = None
            if not stop_reason and uncertainty is not None:
                spread = uncertainty.exceeded(frame.forces_std)
                if spread and uncertainty.action == "stop":
                    stop_reason = uncertainty.message(step, *spread)
            if stop_reason:
                break
            last_good = frame
            if spread and uncertain is not None:
                try:
                    uncertain.append(frame)
                except DiskFullError as err:
                    stop_reason, disk_full = err.strerror, True
                    break
            if step % config.traj_interval == 0 or step == config.steps:
                try:
                    writer.append(frame)
                except DiskFullError as err:
                    stop_reason, disk_full = err.strerror, True
                    break
                written_step = step
            if step % config.log_interval == 0:
                _log_row(log, system, frame, periodic)
            if progress:
                rate = (step - start) / max(time.perf_counter() - clock, 1e-9)
                bar.set_postfix_str(f"{rate * config.timestep * FS_PER_DAY_TO_NS:.3g} ns/day", refresh=False)
                bar.update(1)
    finally:
        elapsed = time.perf_counter() - clock
        if written_step != last_good.step and not disk_full:  # stopped early: end with the last good state
            writer.append(last_good)
        writer.close()
        log.close()
        if uncertain is not None:
            uncertain.close()
        bar.close()
    if disk_full:  # the trajectory's last frame is the state to resume from
        last_good = read_trajectory(output / TRAJECTORY_FILE, last_only=True).frame(0)
    final = frame_atoms(last_good, system.numbers, system.get_masses(), system.pbc)
    try:
        final.write(output / FINAL_FILE)
        plot_log(output / LOG_FILE, output, force_uncertainty_limit=config.max_force_uncertainty)
    except OSError as err:  # derived files: the trajectory and the log hold the run
        if err.errno != errno.ENOSPC:
            raise
        warnings.warn(f"no space left for {FINAL_FILE} and the plots in {str(output)!r}: {err}", stacklevel=2)
    steps_done = last_good.step - start
    rate = steps_done / elapsed if elapsed > 0 else 0.0
    return MDResult(
        output=output,
        atoms=final,
        step=last_good.step,
        steps_run=steps_done,
        stop_reason=None if stop_reason is None else f"Stopped after step {last_good.step}: {stop_reason.rstrip('.')}",
        steps_per_second=rate,
        ns_per_day=rate * config.timestep * FS_PER_DAY_TO_NS,
        neighbour_fraction=(calc.neighbour_seconds - neighbour_start) / elapsed if elapsed > 0 else 0.0,
        neighbour_rebuilds=calc.neighbours.num_builds - rebuilds_start,
        committee_size=len(calc.members),
        uncertain_frames=None if uncertain is None else uncertain.count,
        uncertain_saved=0 if uncertain is None else uncertain.saved,
    )


def _new_settings(config: MDConfig | None, settings: dict) -> MDConfig:
    if config is not None and settings:
        raise ValueError(f"Give the settings either as config or as keywords, not both (got {sorted(settings)}).")
    config = config or MDConfig.from_dict(settings)
    if config.seed is None:
        config = MDConfig.from_dict({**config.to_dict(), "seed": secrets.randbelow(2**32)})
    return config


def _claim_output(output: Path, overwrite: bool) -> None:
    """Make the run folder, refusing to mix a new run into an old one."""
    if (output / TRAJECTORY_FILE).exists() and not overwrite:
        raise ValueError(
            f"{str(output)!r} already holds a run. Continue it with --resume (resume=True), replace it with "
            "--overwrite (overwrite=True), or choose another --output folder."
        )
    output.mkdir(parents=True, exist_ok=True)


def _model_record(model: ModelArgument) -> str | list[str] | None:
    """What a run records as its model (config.yaml, trajectory metadata), for resuming: the
    absolute path of a model file or folder, a list of them for a committee of files, None when
    a model object is among them."""
    paths = list(model) if isinstance(model, (list, tuple)) else [model]
    if not all(isinstance(path, (str, os.PathLike)) for path in paths):
        return None
    recorded = [os.path.abspath(path) for path in paths]
    return recorded if isinstance(model, (list, tuple)) else recorded[0]


def _check_committee(config: MDConfig, committee: bool, previous: Trajectory | None, output: Path) -> None:
    """Refuse a force-uncertainty limit without a committee, and a resume that switches between
    one model and a committee (the trajectory stores forces_std for committees only)."""
    if config.max_force_uncertainty is not None and not committee:
        raise ValueError(
            "max_force_uncertainty (--max-force-uncertainty) needs a committee to measure the uncertainty: give "
            "several --model files or a committee folder (a list of models to eqcalc.md.run), or a model file with "
            "a fitted one-model uncertainty (eqcalc calibrate), not a plain single model."
        )
    if previous is not None and (previous.forces_std is not None) != committee:
        was, now = ("a single model", "a committee") if committee else ("a committee", "a single model")
        raise ValueError(
            f"The run in {str(output)!r} was made with {was} and cannot be resumed with {now}; resume it with "
            "the models it recorded (give no model), or start a new run."
        )


def _resumed_settings(
    output: Path, model: ModelArgument | None, config: MDConfig | None, settings: dict
) -> tuple[MDConfig, ModelArgument, Trajectory]:
    """The saved settings (with ``steps`` possibly changed), the model, and the last saved frame."""
    if config is not None or set(settings) - {"steps"}:
        raise ValueError(
            "A resumed run keeps its saved settings; only steps can be changed "
            f"(got {sorted(set(settings) - {'steps'}) or 'a config'})."
        )
    if not (output / TRAJECTORY_FILE).is_file() or not (output / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"No run to resume in {str(output)!r}: it needs {TRAJECTORY_FILE} and {CONFIG_FILE} from an earlier run."
        )
    saved = read_yaml(output / CONFIG_FILE)
    recorded_model = saved.pop("model", None)
    model = model if model is not None else recorded_model
    if model is None:
        raise ValueError(f"{str(output)!r} records no model file (it was run with a model object); pass the model.")
    config = MDConfig.from_dict({**saved, **settings})
    previous = read_trajectory(output / TRAJECTORY_FILE, last_only=True)
    if len(previous) == 0:
        raise ValueError(f"{str(output / TRAJECTORY_FILE)!r} holds no complete frame to resume from; start afresh.")
    return config, model, previous


def _resumed_atoms(previous: Trajectory, last: Frame, atoms: Atoms | None) -> Atoms:
    system = frame_atoms(last, previous.numbers, previous.masses, previous.pbc)
    system.arrays.pop("forces_std", None)  # recomputed with the state; a stored copy would go stale
    if atoms is not None and not np.array_equal(atoms.numbers, system.numbers):
        raise ValueError("The given structure has other atoms than the run being resumed.")
    return system


def _initial_velocities(atoms: Atoms, config: MDConfig, rng: np.random.Generator) -> None:
    """Maxwell–Boltzmann momenta at the configured temperature without centre-of-mass motion,
    or the structure's own momenta (centre-of-mass motion removed as well)."""
    if config.velocities == "maxwell-boltzmann":
        thermalize_momenta(atoms, temperature_K=config.temperature, rng=rng)
    Stationary(atoms, preserve_temperature=False)


def _snapshot(atoms: Atoms, dynamics: MolecularDynamics, step: int, config: MDConfig, committee: bool) -> Frame:
    """The current state as a frame (evaluates the model if it has not seen these positions), for
    a ``committee`` with its per-atom force spread."""
    return Frame(
        step=step,
        time=step * config.timestep,
        positions=atoms.get_positions(),
        velocities=atoms.get_velocities() * units.fs,
        forces=atoms.get_forces(apply_constraint=False),
        potential_energy=float(atoms.get_potential_energy()),
        cell=atoms.cell.array.copy(),
        integrator=integrator_state(dynamics),
        forces_std=atoms.calc.get_property("forces_std", atoms) if committee else None,
    )


def _log_row(log: ThermoLog, atoms: Atoms, frame: Frame, periodic: bool) -> None:
    pressure = None
    if periodic:
        stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
        pressure = -np.trace(stress) / 3.0 / units.GPa
    spreads = {}
    if frame.forces_std is not None:
        spreads = dict(max_force_std=float(np.max(frame.forces_std)),
                       energy_std=atoms.calc.results.get("energy_std"))  # absent: an LLPR fitted without energies
    log.write(frame.step, frame.time, frame.potential_energy, atoms.get_kinetic_energy(), atoms.get_temperature(),
              pressure, **spreads)
