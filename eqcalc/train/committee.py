"""Committee training: ``committee: N`` trains N models into one folder, whose spread is an uncertainty.

    OUTPUT/config.yaml      the committee's settings (written first; --resume checks them)
    OUTPUT/train.log        the committee's own messages (which member runs, which are kept)
    OUTPUT/member_K/        member K: a complete run folder (train.log, config.yaml, splits.json,
                            metrics.csv, checkpoint.pt, best_model.pt, training.png), seed + K,
                            and finished.json once its training has ended
    OUTPUT/committee.json   the members' model files, N, bootstrap, seeds (:mod:`eqcalc.committee`),
                            written once every member has finished

Every member uses the same training, validation and test frames (the split drawn with ``seed``);
member K's initial weights and shuffling follow seed + K, and with ``committee_bootstrap`` its
training frames are a resample with replacement of the shared training split (its splits.json lists
them). The members train one after another; ``max_epochs`` and ``max_time`` apply to each.

``--resume`` keeps the members that finished under the current limits (max_epochs, max_time,
early_stopping_patience) untouched, resumes a member that has a checkpoint exactly as a single run
resumes (so raising a limit trains finished members on), and starts the rest. ``init_from`` a
committee folder of N members: member K fine-tunes from its member K.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from ..atomic_io import atomic_path
from ..committee import COMMITTEE_FILE, resolve_models, write_committee_file
from .config import TrainConfig, read_config_file
from .data import bootstrap_resample, load_training_data
from .distributed import init_distributed
from .run_folder import CONFIG_NAME, RunLog, remove_run, write_run_config
from .trainer import BEST_MODEL_NAME, CHECKPOINT_NAME, RUN_FILES, Trainer, check_resumable_options

MEMBER_FOLDER = "member_{}"
FINISHED_NAME = "finished.json"
#: the options that bound a member's training: a finished member trains on when --resume changes them
LIMITS = ("max_epochs", "max_time", "early_stopping_patience")


def member_folder(output: str | Path, k: int) -> Path:
    return Path(output) / MEMBER_FOLDER.format(k)


def member_config(config: TrainConfig, k: int, resume: bool = False, overwrite: bool = False) -> TrainConfig:
    """The options of member ``k`` as a single run: output OUTPUT/member_k, seed + k, and ``init_from``
    member k of an ``init_from`` committee (a model file stays as it is). Its data come from the
    committee (:func:`train_committee`), not from its own seed."""
    bases = resolve_models(config.init_from) if config.init_from is not None else None
    return dataclasses.replace(
        config, output=str(member_folder(config.output, k)), seed=config.seed + k,
        init_from=str(bases[k]) if isinstance(bases, list) else config.init_from,
        committee=1, committee_bootstrap=False, resume=resume, overwrite=overwrite,
    )


def committee_size_in(folder: str | Path) -> int:
    """The committee size that ``folder/config.yaml`` records (1: a single run, or no run)."""
    path = Path(folder) / CONFIG_NAME
    saved = read_config_file(path) if path.is_file() else {}
    return saved.get("committee", 1) if isinstance(saved, dict) else 1


def check_single_run_output(output: Path) -> None:
    """ValueError if ``output`` holds a committee: a single run there would mix with its members."""
    size = committee_size_in(output)
    if size > 1:
        raise ValueError(
            f"{str(output)!r} holds a committee of {size} (member_0 …): continue or replace it with --committee {size} "
            "and --resume or --overwrite, or choose another --output."
        )


def _check_output(config: TrainConfig) -> None:
    """Whether the output folder fits --resume / --overwrite (the committee's saved options, with
    --resume); ValueError or FileNotFoundError naming the way out otherwise."""
    output = Path(config.output)
    size, single = committee_size_in(output), (output / CHECKPOINT_NAME).exists()
    if config.resume:
        if size == 1 and single:
            raise ValueError(f"{str(output)!r} holds a single run, not a committee: resume it without --committee.")
        if size == 1:
            raise FileNotFoundError(f"No committee to resume in {str(output)!r} (no {CONFIG_NAME} of a committee); "
                                    "start without --resume.")
        check_resumable_options(read_config_file(output / CONFIG_NAME), config, output)
    elif not config.overwrite and (size > 1 or single):
        raise ValueError(
            f"{str(output)!r} holds {'a committee' if size > 1 else 'a run'}. Continue it with --resume, replace it "
            "with --overwrite, or choose another --output."
        )


def _limits(config: TrainConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LIMITS}


def _member_state(config: TrainConfig, k: int) -> str:
    """"finished" (keep), "resume" (from its checkpoint) or "start" for member ``k``."""
    folder = member_folder(config.output, k)
    if not config.resume:
        return "start"
    finished = folder / FINISHED_NAME
    if finished.is_file() and json.loads(finished.read_text(encoding="utf-8"))["limits"] == _limits(config):
        return "finished"
    return "resume" if (folder / CHECKPOINT_NAME).is_file() else "start"


def _claim_output(config: TrainConfig, log: RunLog, all_finished: bool) -> None:
    """Make the folder, drop committee.json unless ``all_finished`` (until every member has finished
    again), with ``overwrite`` remove the earlier run's files (a single run's, or every member's),
    start OUTPUT/train.log and write OUTPUT/config.yaml."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if not all_finished:
        (output / COMMITTEE_FILE).unlink(missing_ok=True)
    if config.overwrite:
        remove_run(output, RUN_FILES)
        for folder in output.glob(MEMBER_FOLDER.format("*")):
            remove_run(folder, [FINISHED_NAME, *RUN_FILES])
    log.open(output)
    write_run_config(output, config.to_dict())


def train_committee(config: TrainConfig, log: Callable[[str], Any] = print) -> dict:
    """Train the committee of ``config.committee`` members that ``config`` describes (see the module
    docstring); folder and option errors come before any data is read.

    Returns:
        {"members": each member's finished.json record (member, seed, epochs, best_valid_loss,
        limits), "committee": the path of committee.json}.
    """
    output = Path(config.output)
    _check_output(config)
    states = [_member_state(config, k) for k in range(config.committee)]
    context = init_distributed(config.device)
    committee_log = RunLog(log)
    say = committee_log if context.is_main else (lambda message: None)
    if context.is_main:
        _claim_output(config, committee_log, all(state == "finished" for state in states))
    context.barrier()
    data = load_training_data(config)
    seeds = [config.seed + k for k in range(config.committee)]
    records = []
    for k, (state, seed) in enumerate(zip(states, seeds)):
        folder = member_folder(output, k)
        if state == "finished":
            say(f"Member {k} (seed {seed}) finished earlier: kept as it is.")
            records.append(json.loads((folder / FINISHED_NAME).read_text(encoding="utf-8")))
            continue
        resume, overwrite = state == "resume", state == "start" and (config.resume or config.overwrite)
        say(f"Member {k} ({k + 1} of {config.committee}, seed {seed}) {'resumes' if resume else 'starts'} in {folder}.")
        member_data = bootstrap_resample(data, seed) if config.committee_bootstrap else data
        summary = Trainer(member_config(config, k, resume, overwrite), context=context, data=member_data, log=log).fit()
        record = {"member": k, "seed": seed, "epochs": summary["epochs"], "best_valid_loss": summary["best_valid_loss"],
                  "limits": _limits(config)}
        if context.is_main:
            with atomic_path(folder / FINISHED_NAME) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        records.append(record)
    path = output / COMMITTEE_FILE
    if context.is_main:
        members = [f"{MEMBER_FOLDER.format(k)}/{BEST_MODEL_NAME}" for k in range(config.committee)]
        write_committee_file(output, members, config.committee_bootstrap, seeds)
        say("Best validation losses of the members: " + ", ".join(f"{r['best_valid_loss']:.5g}" for r in records) + ".")
        say(f"Committee of {config.committee} in {output}: use it as EquivariantCalculator({str(output)!r}) or "
            f"eqcalc md --model {output} (forces_std, energy_std: the members' spread).")
    return {"members": records, "committee": path}
