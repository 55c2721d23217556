"""The active-learning loop: train a committee → MD with it → pick frames → label them with the
reference calculator → add them to the training data → fine-tune the committee, for R rounds.

Folder layout (``OUTPUT`` = ``config.output``)::

    OUTPUT/config.yaml                 the resolved settings (a rerun with other settings is refused)
    OUTPUT/state.json                  the finished stages of each round and what they recorded
    OUTPUT/learn.log                   the loop's messages, timestamped (training logs: each member's train.log)
    OUTPUT/data/train_round_K.extxyz   the cumulative labelled set that round K trains on
    OUTPUT/round_K/train/              round K's committee (eqcalc train --committee N; K ≥ 1 fine-tunes
                                       member k from member k of round K-1)
    OUTPUT/round_K/md/                 MD with it (eqcalc md, uncertainty_action save): trajectory.h5, log.csv, …
    OUTPUT/round_K/picked.extxyz       the frames picked from its trajectory (no labels)
    OUTPUT/round_K/labelled.extxyz     those the reference labelled (energy, forces, and stress for periodic
                                       cells, as calculator results)
    OUTPUT/metrics.csv                 one row per finished round (:data:`METRIC_COLUMNS`)
    OUTPUT/learning.png                test force MAE and stable MD time against the round (needs matplotlib)

Stages of round K, in order: ``data`` (write train_round_K: initial_data for K = 0, else
train_round_K-1 plus round K-1's labelled frames), ``train``, ``test`` (the committee's mean on
test_data), ``md``, ``select``, ``label``. Each stage that finishes is recorded in state.json,
rewritten atomically (os.replace). Running the loop again on the same output with the same
settings skips the recorded stages; a stage that was interrupted is resumed by its own mechanism
(committee training with ``resume``, MD with ``resume=True``) or redone (data, test, select,
label: each writes its file atomically at its end, so redoing it is the same as doing it once).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic_io import atomic_path, write_csv
from ..train.run_folder import RunLog, remove_run
from .config import LearnConfig

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
LOG_FILE = "learn.log"
METRICS_FILE = "metrics.csv"
PLOT_FILE = "learning.png"
DATA_FOLDER = "data"
ROUND_FOLDER = "round_{:03d}"
TRAIN_DATA_FILE = "train_round_{:03d}.extxyz"
PICKED_FILE = "picked.extxyz"
LABELLED_FILE = "labelled.extxyz"
STAGES = ("data", "train", "test", "md", "select", "label")
STATE_FORMAT = "eqcalc-learn-state"

#: metrics.csv columns; the test columns only with test_data
METRIC_COLUMNS = [
    "round",                  # 0, 1, …
    "n_train",                # frames in the round's training file (training + validation split)
    "test_e_mae_meV_atom",    # the committee mean's energy MAE on test_data, meV/atom
    "test_f_mae_meV_A",       # its force-component MAE, meV/Å
    "stable_md_time_fs",      # simulated time until the largest per-atom force spread first exceeded the limit, fs
    "md_time_fs",             # simulated time the round's MD reached, fs
    "md_completed",           # 1 if the MD ran all its steps, 0 if a safety guard stopped it
    "max_force_std_eVA",      # the largest per-atom force spread the MD reached, eV/Å
    "frames_picked",          # frames picked from the trajectory
    "frames_labelled",        # of those, labelled by the reference and added to the next round's data
    "frames_skipped",         # of those, skipped (the reference failed, gave NaN/inf, or an outlier label)
    "wall_s",                 # seconds spent on the round's stages
]
TEST_COLUMNS = ("test_e_mae_meV_atom", "test_f_mae_meV_A")


@dataclass
class LearnResult:
    """What :func:`learn` did.

    Attributes:
        output: the run folder.
        rounds: the metrics row of every finished round (keys :data:`METRIC_COLUMNS`), in order.
    """

    output: Path
    rounds: list[dict[str, Any]]

    @property
    def metrics(self) -> Path:
        return self.output / METRICS_FILE

    def committee(self, round_index: int = -1) -> Path:
        """The committee folder of a round (default: the last finished one)."""
        index = self.rounds[round_index]["round"]
        return self.output / ROUND_FOLDER.format(index) / "train"


def learn(config: LearnConfig, *, overwrite: bool = False, log: Callable[[str], Any] = print,
          train_log: Callable[[str], Any] | None = None) -> LearnResult:
    """Run (or continue) the active-learning loop ``config`` describes (see the module docstring).

    Args:
        config: the settings (:func:`eqcalc.learn.load_learn_config` reads a YAML file).
        overwrite: delete an earlier run's files in ``config.output`` and start again.
        log: where the loop's messages go (also to OUTPUT/learn.log).
        train_log: where the training's messages go (default: ``log``, not to learn.log).

    Returns:
        The :class:`LearnResult`. Settings, input and output-folder problems raise ValueError or
        FileNotFoundError before any work starts.
    """
    config.check_inputs()
    output = Path(config.output)
    state = _claim_output(config, output, overwrite)
    loop = _Loop(config, output, state, log, train_log or log)
    return loop.run()


# --------------------------------------------------------------------------------- output folder


def _claim_output(config: LearnConfig, output: Path, overwrite: bool) -> "_State":
    """Check the folder against the settings (refuse changed ones, naming the keys), remove an
    earlier run with ``overwrite``, write config.yaml and return the state."""
    from ..md.config import read_yaml, write_yaml

    saved_path, state_path = output / CONFIG_FILE, output / STATE_FILE
    if overwrite:
        _remove_run(output)
    elif saved_path.is_file():
        saved = read_yaml(saved_path)
        changed = _changed_keys(saved, config.to_dict(), ignore=("rounds",))
        if changed:
            details = "; ".join(f"{key}: {old!r} → {new!r}" for key, old, new in changed[:5])
            more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
            raise ValueError(
                f"{str(output)!r} holds an active-learning run made with other settings ({details}{more}). Use the "
                "original settings (only rounds may change), start again with --overwrite (overwrite=True), or "
                "choose another output."
            )
    elif state_path.is_file():
        raise ValueError(f"{str(output)!r} holds an active-learning run without its {CONFIG_FILE}; start again with "
                         "--overwrite (overwrite=True), or choose another output.")
    state = _State(state_path)
    finished = state.finished_rounds()
    if finished > config.rounds:
        raise ValueError(f"rounds: {config.rounds}, but {str(output)!r} holds {finished} finished rounds; rounds may "
                         f"only grow (give rounds ≥ {finished}), or start again with --overwrite.")
    output.mkdir(parents=True, exist_ok=True)
    write_yaml(config.to_dict(), saved_path)
    return state


def _remove_run(output: Path) -> None:
    """Delete what an earlier run of the loop wrote in ``output`` (and nothing else)."""
    if not output.is_dir():
        return
    for folder in [*output.glob("round_[0-9][0-9][0-9]"), output / DATA_FOLDER]:
        if folder.is_dir():
            shutil.rmtree(folder)
    remove_run(output, [CONFIG_FILE, STATE_FILE, LOG_FILE, METRICS_FILE, PLOT_FILE])


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict) and values:
        flat = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: values}


def _changed_keys(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) of every setting that differs; a key only one side
    has counts as changed unless its value there is null (a setting added since, left at its default)."""
    old, new = _flatten(saved), _flatten(current)
    missing = object()
    changed = []
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] in ignore:
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b and not (a is missing and b is None or b is missing and a is None):
            changed.append((key, None if a is missing else a, None if b is missing else b))
    return changed


class _State:
    """state.json: ``{"format", "rounds": {"0": {stage: record, …, "done": metrics row}, …}}``,
    rewritten atomically after every stage."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {"format": STATE_FORMAT, "format_version": 1, "rounds": {}}
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError(f"{str(path)!r} is damaged ({err}); start again with --overwrite.") from None
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError(f"{str(path)!r} is not an eqcalc learn state file; start again with --overwrite.")
            self.data = data

    def get(self, round_index: int, stage: str) -> dict | None:
        return self.data["rounds"].get(str(round_index), {}).get(stage)

    def put(self, round_index: int, stage: str, record: dict) -> None:
        self.data["rounds"].setdefault(str(round_index), {})[stage] = record
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")

    def finished_rounds(self) -> int:
        count = 0
        while self.get(count, "done") is not None:
            count += 1
        return count

    def rows(self) -> list[dict]:
        return [self.get(k, "done") for k in range(self.finished_rounds())]


class _Log(RunLog):
    """Messages to ``echo`` and, timestamped, to OUTPUT/learn.log; warnings also as Python warnings."""

    def __init__(self, output: Path, echo: Callable[[str], Any]):
        super().__init__(echo)
        self.open(output, LOG_FILE)

    def warn(self, message: str) -> None:
        self(f"warning: {message}")
        warnings.warn(message, stacklevel=3)


# --------------------------------------------------------------------------------- frames


def read_extxyz(path: Path) -> list:
    """The frames of an extxyz file the loop wrote (an empty file: none)."""
    import ase.io

    path = Path(path)
    if path.stat().st_size == 0:
        return []
    return ase.io.read(path, ":", format="extxyz")


def write_frames(path: Path, frames: list) -> None:
    """Write ``frames`` as extxyz atomically (an empty file for none)."""
    from ..selection import write_extxyz

    if frames:
        write_extxyz(path, frames)
    else:
        with atomic_path(path) as tmp:
            tmp.write_text("")


def label_frame(atoms, calculator):
    """A copy of ``atoms`` with the reference ``calculator``'s energy (eV), forces (N, 3) eV/Å
    and, for a periodic cell, Voigt stress (6,) eV/Å³ attached as a SinglePointCalculator.
    Raises whatever the calculator raises, and FloatingPointError for non-finite results."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..calculator import has_stress

    work = atoms.copy()
    work.calc = calculator
    results = {"energy": float(work.get_potential_energy()), "forces": np.array(work.get_forces(), dtype=np.float64)}
    if has_stress(work):
        results["stress"] = np.array(work.get_stress(voigt=True), dtype=np.float64)
    bad = [name for name, value in results.items() if not np.isfinite(value).all()]
    if bad:
        raise FloatingPointError(f"the reference returned non-finite {' and '.join(bad)} (NaN or inf)")
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


# --------------------------------------------------------------------------------- the loop


class _Loop:
    def __init__(self, config: LearnConfig, output: Path, state: _State, log, train_log):
        self.config, self.output, self.state = config, output, state
        self.log = _Log(output, log)
        self.train_log = train_log

    # paths
    def round_folder(self, k: int) -> Path:
        return self.output / ROUND_FOLDER.format(k)

    def train_file(self, k: int) -> Path:
        return self.output / DATA_FOLDER / TRAIN_DATA_FILE.format(k)

    def committee_folder(self, k: int) -> Path:
        return self.round_folder(k) / "train"

    def md_folder(self, k: int) -> Path:
        return self.round_folder(k) / "md"

    def run(self) -> LearnResult:
        config = self.config
        finished = self.state.finished_rounds()
        if finished:
            self.log(f"Continuing {self.output}: {finished} of {config.rounds} rounds finished earlier.")
        else:
            self.log(f"Active learning in {self.output}: {config.rounds} rounds, committees of {config.committee}, "
                     f"{config.select.n} frames per round by {config.selection} selection, reference "
                     f"{config.reference.calculator}.")
        for k in range(config.rounds):
            if self.state.get(k, "done") is not None:
                continue
            records = {}
            for stage in STAGES:
                record = self.state.get(k, stage)
                if record is None:
                    started = time.perf_counter()
                    record = getattr(self, f"stage_{stage}")(k, records)
                    record["seconds"] = time.perf_counter() - started
                    self.state.put(k, stage, record)
                records[stage] = record
            row = self.metrics_row(k, records)
            self.state.put(k, "done", row)
            self.write_metrics()
            self.log(_round_line(row))
        rows = self.state.rows()[:config.rounds]
        self.write_metrics()
        self.log(f"Done: {len(rows)} rounds; metrics in {self.output / METRICS_FILE}. Latest committee: "
                 f"EquivariantCalculator({str(self.committee_folder(len(rows) - 1))!r}).")
        return LearnResult(self.output, rows)

    # ---------------------------------------------------------------- stages

    def stage_data(self, k: int, records: dict) -> dict:
        """Write train_round_k: the initial data (k = 0), or train_round_{k-1} plus round k-1's labels."""
        from ..data.readers import read_structures

        if k == 0:
            frames = []
            for path in self.config.initial_files:
                frames.extend(structure.to_atoms() for structure in read_structures(path, self.config.label_keys))
            added = len(frames)
        else:
            previous = read_extxyz(self.train_file(k - 1))
            labelled = read_extxyz(self.round_folder(k - 1) / LABELLED_FILE)
            frames, added = previous + labelled, len(labelled)
        write_frames(self.train_file(k), frames)
        self.log(f"Round {k}: training data {self.train_file(k)}: {len(frames)} frames"
                 + (f" ({added} labelled in round {k - 1})." if k else "."))
        return {"file": str(self.train_file(k)), "n_train": len(frames), "added": added}

    def stage_train(self, k: int, records: dict) -> dict:
        from ..train.committee import committee_size_in, train_committee

        folder = self.committee_folder(k)
        init_from = self.committee_folder(k - 1) if k else None
        resume = committee_size_in(folder) > 1  # an interrupted earlier attempt: continue it
        config = self.config.train_config(k, self.train_file(k), folder, init_from, resume)
        how = f"fine-tuning from {init_from}" if init_from else "from scratch"
        self.log(f"Round {k}: training a committee of {self.config.committee} in {folder} ({how}"
                 + (", resuming an interrupted training)." if resume else ")."))
        summary = train_committee(config, log=self.train_log)
        return {"committee": str(folder), "init_from": None if init_from is None else str(init_from),
                "cutoff": config.model.cutoff, "device": config.device,
                "best_valid_loss": [member["best_valid_loss"] for member in summary["members"]]}

    def stage_test(self, k: int, records: dict) -> dict:
        if self.config.test_data is None:
            return {}
        errors = committee_test_errors(self.committee_folder(k), self.config.test_data, self.config.label_keys,
                                       device=self.config.md.get("device", "cpu"))
        self.log(f"Round {k}: test errors of the committee mean on {self.config.test_data}: energy "
                 f"{errors['e_mae']:.3g} meV/atom, forces {errors['f_mae']:.3g} meV/Å (MAE).")
        return {"e_mae_meV_atom": errors["e_mae"], "f_mae_meV_A": errors["f_mae"], "structures": errors["structures"]}

    def stage_md(self, k: int, records: dict) -> dict:
        from ..commands.md import read_structure
        from ..md import run as run_md
        from ..md.run import CONFIG_FILE as MD_CONFIG, TRAJECTORY_FILE
        from ..md.trajectory import read_trajectory

        options, md_config = self.config.md_config()
        folder = self.md_folder(k)
        common = dict(output=folder, progress=options["progress"], device=options["device"], dtype=options["dtype"],
                      compile=options["compile"])
        last_step = None
        if (folder / TRAJECTORY_FILE).is_file() and (folder / MD_CONFIG).is_file():
            try:
                previous = read_trajectory(folder / TRAJECTORY_FILE, last_only=True)
                last_step = int(previous.step[-1]) if len(previous) else None
            except (OSError, ValueError):
                last_step = None
        result = None
        if last_step is None:
            self.log(f"Round {k}: MD in {folder} ({md_config.ensemble}, {md_config.temperature:g} K, "
                     f"{md_config.steps} steps of {md_config.timestep:g} fs) with the committee.")
            result = run_md(read_structure(options["structure"]), str(self.committee_folder(k)), md_config,
                            overwrite=True, **common)
        elif last_step < md_config.steps:
            self.log(f"Round {k}: resuming the interrupted MD in {folder} from step {last_step}.")
            result = run_md(None, None, resume=True, **common)
        record = md_summary(folder, md_config.timestep)
        record["stop_reason"] = None if result is None else result.stop_reason
        record["completed"] = record["stop_reason"] is None
        if not record["completed"]:
            self.log.warn(f"round {k}: the MD stopped early: {record['stop_reason']}; its frames up to there are "
                          "the candidates.")
        self.log(f"Round {k}: MD reached {record['time_fs']:g} fs; stable (largest force spread ≤ "
                 f"{self.config.max_force_uncertainty:g} eV/Å) for {record['stable_time_fs']:g} fs; largest spread "
                 f"{record['max_force_std']:.3g} eV/Å; {record['uncertain_frames']} steps above the limit.")
        return record

    def stage_select(self, k: int, records: dict) -> dict:
        from .. import selection
        from ..md.run import TRAJECTORY_FILE

        config = self.config
        candidates = selection.read_candidates([self.md_folder(k) / TRAJECTORY_FILE], every=config.select.every)
        uncertainties = selection.stored_uncertainties(candidates)
        wanted = config.select.n
        if config.selection == "random":
            eligible = len(candidates)
            rng = np.random.default_rng([config.seed, k])
            picked = rng.choice(eligible, size=min(wanted, eligible), replace=False).tolist()
        else:
            window = (config.select.min_uncertainty, config.select.max_uncertainty)
            eligible = int(np.sum(selection.in_window(uncertainties, *window)))
            count = min(wanted, eligible)
            picked = [] if count == 0 else selection.select_frames(
                [c.atoms for c in candidates], uncertainties, count, window[0], cutoff=records["train"]["cutoff"],
                max_uncertainty=window[1])
        frames = []
        for p in picked:
            frame = selection.labelling_frame(candidates[p], uncertainties[p])
            frame.info["learn_round"] = k
            frames.append(frame)
        write_frames(self.round_folder(k) / PICKED_FILE, frames)
        if len(picked) < wanted:
            self.log.warn(f"round {k}: picked {len(picked)} frames, not {wanted}: only {eligible} of the "
                          f"{len(candidates)} trajectory frames are candidates.")
        self.log(f"Round {k}: picked {len(picked)} of {len(candidates)} trajectory frames ({config.selection}); "
                 f"largest force spread among them {max(uncertainties[picked], default=0.0):.3g} eV/Å.")
        return {"candidates": len(candidates), "eligible": eligible, "picked": len(picked),
                "frames": [int(candidates[p].index) for p in picked],
                "uncertainties": [float(uncertainties[p]) for p in picked]}

    def stage_label(self, k: int, records: dict) -> dict:
        from ..data.readers import read_structures, structure_from_atoms
        from ..train.outliers import DEFAULT_THRESHOLD, find_outliers

        frames = read_extxyz(self.round_folder(k) / PICKED_FILE)
        calculator = self.config.reference_factory()() if frames else None
        labelled, skipped = [], []
        for index, atoms in enumerate(frames):
            try:
                labelled.append((index, label_frame(atoms, calculator)))
            except Exception as err:  # any failure of the reference: skip the frame, keep the loop going
                reason = f"{type(err).__name__}: {err}"
                skipped.append({"frame": index, "reason": reason})
                self.log.warn(f"round {k}: the reference failed on picked frame {index} ({reason}); frame skipped.")
                if hasattr(calculator, "reset"):
                    calculator.reset()
        threshold = self.config.train.get("outlier_threshold", DEFAULT_THRESHOLD)
        if labelled and threshold is not None:  # labels that would make the next round's training refuse its data
            known = read_structures(self.train_file(k))
            new = [structure_from_atoms(frame) for _, frame in labelled]
            outliers = {o.index - len(known): o for o in find_outliers(known + new, threshold) if o.index >= len(known)}
            for position in sorted(outliers, reverse=True):
                index, _ = labelled.pop(position)
                reason = f"outlier label: {outliers[position].describe()} (train.outlier_threshold {threshold:g})"
                skipped.append({"frame": index, "reason": reason})
                self.log.warn(f"round {k}: picked frame {index} has an {reason}; frame skipped.")
        write_frames(self.round_folder(k) / LABELLED_FILE, [frame for _, frame in labelled])
        self.log(f"Round {k}: labelled {len(labelled)} of {len(frames)} picked frames with "
                 f"{self.config.reference.calculator}" + (f"; {len(skipped)} skipped." if skipped else "."))
        return {"labelled": len(labelled), "skipped": sorted(skipped, key=lambda s: s["frame"])}

    # ---------------------------------------------------------------- metrics

    def metrics_row(self, k: int, records: dict) -> dict:
        md, test = records["md"], records["test"]
        row = {
            "round": k,
            "n_train": records["data"]["n_train"],
            "test_e_mae_meV_atom": test.get("e_mae_meV_atom"),
            "test_f_mae_meV_A": test.get("f_mae_meV_A"),
            "stable_md_time_fs": md["stable_time_fs"],
            "md_time_fs": md["time_fs"],
            "md_completed": int(md["completed"]),
            "max_force_std_eVA": md["max_force_std"],
            "frames_picked": records["select"]["picked"],
            "frames_labelled": records["label"]["labelled"],
            "frames_skipped": len(records["label"]["skipped"]),
            "wall_s": round(sum(record.get("seconds", 0.0) for record in records.values()), 3),
        }
        return row

    def columns(self) -> list[str]:
        return [c for c in METRIC_COLUMNS if self.config.test_data is not None or c not in TEST_COLUMNS]

    def write_metrics(self) -> None:
        columns = self.columns()
        rows = [{c: row.get(c) for c in columns} for row in self.state.rows()]
        write_csv(self.output / METRICS_FILE, columns, rows)
        plot_learning(rows, self.output / PLOT_FILE, self.config.max_force_uncertainty)


def _round_line(row: dict) -> str:
    test = ""
    if row.get("test_f_mae_meV_A") is not None:
        test = f"test F MAE {row['test_f_mae_meV_A']:.3g} meV/Å, E MAE {row['test_e_mae_meV_atom']:.3g} meV/atom; "
    return (f"Round {row['round']} finished in {row['wall_s']:.0f} s: {row['n_train']} training frames; {test}stable "
            f"MD {row['stable_md_time_fs']:g} fs of {row['md_time_fs']:g} fs; {row['frames_labelled']} frames "
            f"labelled ({row['frames_skipped']} skipped).")


# --------------------------------------------------------------------------------- measurements


def md_summary(folder: Path, timestep: float) -> dict:
    """What a committee MD run with uncertainty_action save reached, from its files: the step and
    time (fs) of its last trajectory frame, the stable time (fs: the time of the first step whose
    largest per-atom force spread exceeded the limit, i.e. the first frame of uncertain.extxyz; the
    time reached if none did), the largest spread (eV/Å) of any logged or saved step, and the
    number of steps above the limit."""
    from ..md.log import read_log
    from ..md.run import LOG_FILE as MD_LOG, TRAJECTORY_FILE, UNCERTAIN_FILE
    from ..md.trajectory import read_trajectory

    last = read_trajectory(folder / TRAJECTORY_FILE, last_only=True)
    step = int(last.step[-1])
    reached = step * timestep
    uncertain = read_extxyz(folder / UNCERTAIN_FILE) if (folder / UNCERTAIN_FILE).is_file() else []
    spreads = [float(atoms.info["max_force_std"]) for atoms in uncertain]
    logged = read_log(folder / MD_LOG).get("max_force_std_eVA")
    if logged is not None:
        spreads.extend(float(value) for value in logged)
    stable = min(reached, float(uncertain[0].info["step"]) * timestep) if uncertain else reached
    return {"step": step, "time_fs": reached, "stable_time_fs": stable, "max_force_std": max(spreads, default=0.0),
            "uncertain_frames": len(uncertain)}


def committee_test_errors(committee: str | os.PathLike, data: str | os.PathLike, keys=None,
                          device: str = "cpu") -> dict[str, float]:
    """Errors of a committee's mean prediction (mean energy, forces and stress of its members) on
    the labelled file ``data``, as ``eqcalc eval`` reports them (:func:`eqcalc.train.evaluate.grouped_errors`,
    all structures): "e_mae" meV/atom, "f_mae" meV/Å, … and "structures"."""
    from ..committee import committee_files
    from ..data.dataset import GraphDataset
    from ..data.readers import LabelKeys, read_structures
    from ..inference import inference_model
    from ..train.evaluate import Prediction, grouped_errors, predict

    structures = read_structures(data, keys or LabelKeys())
    members = [inference_model(path, device=device)[0] for path in committee_files(committee)]
    dataset = GraphDataset(structures, members[0].cutoff, str(data))
    runs = [predict(model, dataset, device=device) for model in members]
    mean = []
    for parts in zip(*runs):
        stress = None if parts[0].stress is None else np.mean([p.stress for p in parts], axis=0)
        mean.append(Prediction(float(np.mean([p.energy for p in parts])), np.mean([p.forces for p in parts], axis=0),
                               stress))
    return grouped_errors(dataset, mean)["all"]


def plot_learning(rows: list[dict], path: Path, limit: float | None = None) -> Path | None:
    """learning.png: the test force MAE (when measured) and the stable MD time against the round;
    None without rows or matplotlib."""
    from ..plotting import new_figure

    if not rows:
        return None
    fig = new_figure(figsize=(6.4, 6.4 if rows[0].get("test_f_mae_meV_A") is not None else 3.6))
    if fig is None:
        return None
    rounds = [row["round"] for row in rows]
    panels = []
    if rows[0].get("test_f_mae_meV_A") is not None:
        panels.append(("test_f_mae_meV_A", "test force MAE (meV/Å)"))
    panels.append(("stable_md_time_fs", "stable MD time (fs)"))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, label) in zip(axes, panels):
        ax.plot(rounds, [row[key] for row in rows], marker="o")
        ax.set_ylabel(label)
    axes[-1].set_xlabel("round")
    axes[-1].set_xticks(rounds)
    if limit is not None:
        axes[-1].set_title(f"until the largest force spread first exceeds {limit:g} eV/Å", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path
