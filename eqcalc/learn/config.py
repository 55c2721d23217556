"""The settings of an active-learning run (``eqcalc learn CONFIG``), read from plain YAML.

Every key is checked like the keys of ``eqcalc train`` and ``eqcalc md`` configs (unknown keys
with a "did you mean", values of the wrong type, values out of range), and the inputs are checked
(files exist and read, the reference calculator imports and builds) before any work starts; each
problem is one ValueError or FileNotFoundError whose message names the key.

``train`` is an ``eqcalc train`` config (a mapping, see :class:`eqcalc.train.config.TrainConfig`)
used for every round, except the keys the loop sets itself (:data:`TRAIN_KEYS_SET_BY_THE_LOOP`);
``md`` holds the settings of :func:`eqcalc.md.run` (:class:`eqcalc.md.MDConfig` and the run
options ``structure``, ``device``, ``dtype``, ``compile``, ``progress``), except those the loop sets
(:data:`MD_KEYS_SET_BY_THE_LOOP`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union

from ..md.config import MDConfig
from ..train.config import TrainConfig, _checked, _option, read_config_file

#: keys of the ``train`` mapping that the loop sets itself, and why
TRAIN_KEYS_SET_BY_THE_LOOP = {
    "train": "every round trains on OUTPUT/data/train_round_K.extxyz (initial_data plus the frames labelled so "
             "far); give the labelled starting frames as initial_data",
    "valid": "every round holds out valid_fraction (or valid_count) of its own training set",
    "test": "give the file as test_data: the loop evaluates each round's committee on it",
    "output": "every round trains into OUTPUT/round_K/train; set output at the top level",
    "committee": "set committee at the top level",
    "init_from": "round 0 starts from scratch and round K fine-tunes member k from member k of round K-1",
    "resume": "eqcalc learn resumes an interrupted round by itself (--overwrite starts again)",
    "overwrite": "eqcalc learn resumes an interrupted round by itself (--overwrite starts again)",
}

#: fine-tuning options of the ``train`` mapping: used from round 1 on (round 0 has no base model)
FINETUNING_KEYS = ("freeze", "replay_data", "replay_fraction")

#: keys of the ``md`` mapping that the loop sets itself, and why
MD_KEYS_SET_BY_THE_LOOP = {
    "model": "every round runs MD with that round's committee",
    "output": "every round runs MD in OUTPUT/round_K/md; set output at the top level",
    "resume": "eqcalc learn resumes an interrupted MD run by itself",
    "overwrite": "eqcalc learn resumes an interrupted MD run by itself (--overwrite starts again)",
    "max_force_uncertainty": "set max_force_uncertainty at the top level",
    "uncertainty_action": "the loop runs MD with uncertainty_action save: the steps above the limit are collected",
}

#: pip packages of reference calculators whose module name differs from the package name
PIP_NAMES = {
    "tblite": '"eqcalc[xtb]" (the tblite wheel)',
    "xtb": '"eqcalc[xtb]" (tblite, the maintained GFN-xTB; its calculator is tblite.ase:TBLite)',
    "mace": "mace-torch",
    "gpaw": "gpaw",
    "pyscf": "pyscf",
    "torchani": "torchani",
    "dftd3": "dftd3",
}


@dataclass
class ReferenceSection:
    """The ``reference:`` section: the ASE calculator that labels the picked frames."""

    calculator: Union[str, None] = _option(
        None, '"module:Class" of an ASE calculator, e.g. "ase.calculators.emt:EMT" or "tblite.ase:TBLite"')
    kwargs: dict = _option({}, "keyword arguments of its constructor, e.g. {method: GFN2-xTB, verbosity: 0}")


@dataclass
class SelectSection:
    """The ``select:`` section: how many frames each round labels, and which are candidates."""

    n: int = _option(10, "frames picked (and labelled) per round, K")
    min_uncertainty: Union[float, None] = _option(
        None, "uncertainty selection: only frames whose largest force spread is ≥ this are candidates, eV/Å "
        "(null: no lower bound)")
    max_uncertainty: Union[float, None] = _option(
        None, "uncertainty selection: only frames whose largest force spread is ≤ this are candidates, eV/Å "
        "(null: no upper bound; a bound leaves out frames far outside the data, e.g. a molecule breaking apart)")
    every: int = _option(1, "candidates: every S-th frame of the round's MD trajectory")


@dataclass
class MDRunSection:
    """The run options of the ``md:`` section (the other keys are :class:`eqcalc.md.MDConfig` settings)."""

    structure: Union[str, None] = _option(None, "starting structure of every round's MD (the last frame of the file)")
    device: str = _option("cpu", "torch device of the MD")
    dtype: Union[Literal["float32", "float64"], None] = _option(None, "precision of the MD (null: the model's)")
    compile: bool = _option(False, "run the committee through torch.compile")
    progress: bool = _option(False, "show a progress bar during the MD")


@dataclass
class LearnConfig:
    """Every setting of an active-learning run (see the module docstring and docs/uncertainty.md)."""

    output: str = _option("runs/learn", "output folder (round_000/, data/, metrics.csv, learning.png, config.yaml)")
    initial_data: Union[str, list, None] = _option(None, "labelled starting frames: a file or a list of files")
    test_data: Union[str, None] = _option(None, "labelled file on which each round's committee is evaluated (null: none)")
    reference: ReferenceSection = field(default_factory=ReferenceSection, metadata={"help": "calculator, kwargs"})
    rounds: int = _option(4, "rounds of train → MD → select → label (may be raised to continue a finished run)")
    committee: int = _option(4, "committee members per round (≥ 2: their spread is the uncertainty)")
    train: dict = _option({}, "eqcalc train options of every round (model, max_epochs, lr, …)")
    md: dict = _option({}, "eqcalc md settings of every round (structure, temperature, steps, timestep, …)")
    max_force_uncertainty: Union[float, None] = _option(
        None, "eV/Å: the MD collects the steps whose largest per-atom force spread exceeds it, and the stable MD "
        "time of a round is the simulated time until that first happens")
    select: SelectSection = field(default_factory=SelectSection, metadata={"help": "n, min_uncertainty, max_uncertainty, every"})
    selection: Literal["uncertainty", "random"] = _option(
        "uncertainty", "uncertainty (uncertain and distinct frames) or random (the same number, drawn at random "
        "from the same trajectory: the baseline)")
    seed: int = _option(0, "seed of the random selection, and of the MD unless md.seed is given")

    source: str = field(default="config", repr=False, compare=False, metadata={"help": "where the settings came from"})

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "LearnConfig":
        """Build from a plain dict and check keys, types and ranges (not the files: :meth:`check_inputs`)."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a mapping of settings, got {type(values).__name__}.")
        values = dict(values)
        for key in values:
            if key not in _field_names(cls):
                _unknown(f"{source}: ", key, _field_names(cls))
        sections = {name: values.pop(name) for name in ("reference", "select") if name in values}
        options = _checked(cls, values, f"{source}: ", skip=("reference", "select", "source"))
        for name in sections:
            if not isinstance(sections[name], dict):
                raise ValueError(f"{source}: {name}: expected a mapping, got {sections[name]!r}.")
        reference = ReferenceSection(**_checked(ReferenceSection, sections.get("reference", {}), f"{source}: reference."))
        select = SelectSection(**_checked(SelectSection, sections.get("select", {}), f"{source}: select."))
        config = cls(reference=reference, select=select, source=source, **options)
        config._check_ranges()
        config.train = config._checked_train()
        config.md = config._checked_md()
        return config

    def _check_ranges(self) -> None:
        source = self.source
        for name in ("initial_data", "max_force_uncertainty"):
            if getattr(self, name) is None:
                raise ValueError(f"{source}: {name}: required (see docs/uncertainty.md, active learning).")
        if self.reference.calculator is None:
            raise ValueError(f'{source}: reference.calculator: required, e.g. "ase.calculators.emt:EMT".')
        if ":" not in self.reference.calculator:
            raise ValueError(f"{source}: reference.calculator: expected \"module:Class\" (e.g. "
                             f"\"ase.calculators.emt:EMT\"), got {self.reference.calculator!r}.")
        files = self.initial_files
        if not files or not all(isinstance(path, str) and path for path in files):
            raise ValueError(f"{source}: initial_data: expected a file or a list of files, got {self.initial_data!r}.")
        rules = [
            ("rounds", self.rounds >= 1, "≥ 1"),
            ("committee", self.committee >= 2, "≥ 2 (a committee's spread is the uncertainty)"),
            ("max_force_uncertainty", self.max_force_uncertainty > 0, "> 0 eV/Å"),
            ("select.n", self.select.n >= 1, "≥ 1"),
            ("select.every", self.select.every >= 1, "≥ 1"),
            ("select.min_uncertainty", self.select.min_uncertainty is None or self.select.min_uncertainty >= 0,
             "≥ 0 eV/Å or null"),
            ("select.max_uncertainty", self.select.max_uncertainty is None or self.select.max_uncertainty > 0,
             "> 0 eV/Å or null"),
            ("select.max_uncertainty", None in (self.select.min_uncertainty, self.select.max_uncertainty)
             or self.select.max_uncertainty >= self.select.min_uncertainty, "≥ select.min_uncertainty"),
        ]
        for name, ok, wanted in rules:
            if not ok:
                raise ValueError(f"{source}: {name} must be {wanted}.")

    def _checked_train(self) -> dict[str, Any]:
        """The ``train`` mapping with its values coerced, checked as round 0's training options."""
        source = f"{self.source}: train"
        values = dict(self.train)
        for key, why in TRAIN_KEYS_SET_BY_THE_LOOP.items():
            if key in values:
                raise ValueError(f"{source}.{key}: set by the loop ({why}); remove it.")
        try:
            config = TrainConfig.from_dict(self._round_train_values(values, 0, "train.extxyz", "train"), source)
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith(source) else f"{source}: {message}") from None
        # the values as given (coerced), not round 0's: that one drops the fine-tuning options
        checked = _checked(TrainConfig, {key: value for key, value in values.items() if key != "model"}, f"{source}: ")
        if "model" in values:
            checked["model"] = dataclasses.asdict(config.model)
        return checked

    def _checked_md(self) -> dict[str, Any]:
        """The ``md`` mapping with its values coerced and checked (an MDConfig is built from it)."""
        prefix = f"{self.source}: md."
        values = dict(self.md)
        for key, why in MD_KEYS_SET_BY_THE_LOOP.items():
            if key in values:
                raise ValueError(f"{prefix}{key}: set by the loop ({why}); remove it.")
        run_keys, settings_keys = _field_names(MDRunSection), _field_names(MDConfig)
        for key in values:
            if key not in run_keys + settings_keys:
                _unknown(prefix, key, run_keys + settings_keys)
        run = _checked(MDRunSection, {k: v for k, v in values.items() if k in run_keys}, prefix)
        settings = _checked(MDConfig, {k: v for k, v in values.items() if k in settings_keys}, prefix)
        if run.get("structure") is None:
            raise ValueError(f"{prefix}structure: required: the starting structure of every round's MD (a file).")
        try:
            MDConfig(**{"seed": self.seed, **settings, "max_force_uncertainty": self.max_force_uncertainty,
                        "uncertainty_action": "save"})
        except ValueError as err:
            raise ValueError(f"{prefix[:-1]}: {err}") from None
        return {**run, **settings}

    def check_inputs(self) -> None:
        """FileNotFoundError or ValueError naming the key whose file is missing or unreadable, whose
        structure has elements the initial data lack, or whose reference calculator cannot be
        imported or built."""
        from ..commands.md import read_structure
        from ..data.readers import read_structures

        keys = self.label_keys
        elements: set[int] = set()
        for path in self.initial_files:
            _check_file(self.source, "initial_data", path)
            try:
                structures = read_structures(path, keys)
            except ValueError as err:
                raise ValueError(f"{self.source}: initial_data: {err}") from None
            elements.update(int(z) for s in structures for z in s.numbers)
        if self.test_data is not None:
            _check_file(self.source, "test_data", self.test_data)
            try:
                test = read_structures(self.test_data, keys)
            except ValueError as err:
                raise ValueError(f"{self.source}: test_data: {err}") from None
            extra = sorted({_symbol(int(z)) for s in test for z in s.numbers} - {_symbol(z) for z in elements})
            if extra:
                raise ValueError(f"{self.source}: test_data: {self.test_data!r} holds {extra}, which initial_data "
                                 "lack; the committee could not describe them.")
        structure = self.md["structure"]
        _check_file(self.source, "md.structure", structure)
        try:
            atoms = read_structure(structure)
        except ValueError as err:
            raise ValueError(f"{self.source}: md.structure: {err}") from None
        missing = sorted(set(atoms.get_chemical_symbols()) - {_symbol(z) for z in elements})
        if missing:
            raise ValueError(f"{self.source}: md.structure: {structure!r} holds {missing}, which initial_data lack; "
                             "the committee could not describe them.")
        if self.train.get("replay_data") is not None:
            _check_file(self.source, "train.replay_data", self.train["replay_data"])
        self.reference_factory()()  # imports the module and builds one calculator

    # ------------------------------------------------------------------ derived settings

    @property
    def initial_files(self) -> list[str]:
        return [self.initial_data] if isinstance(self.initial_data, str) else list(self.initial_data or [])

    @property
    def label_keys(self):
        """The label keys of initial_data and test_data (the train mapping's energy_key, forces_key, stress_key)."""
        from ..data.readers import LabelKeys

        return LabelKeys(self.train.get("energy_key"), self.train.get("forces_key"), self.train.get("stress_key"))

    def _round_train_values(self, values: dict[str, Any], round_index: int, train_file: str, output: str,
                            init_from: str | None = None) -> dict[str, Any]:
        values = {**values, "train": train_file, "output": output, "committee": self.committee,
                  # the loop's training files hold the labels as calculator results
                  "energy_key": None, "forces_key": None, "stress_key": None}
        if round_index == 0:
            for key in FINETUNING_KEYS:
                values.pop(key, None)
            if values.get("atomic_energies") == "keep":
                values["atomic_energies"] = "auto"
        else:
            values.pop("model", None)  # init_from fixes the architecture
            values["init_from"] = init_from
        return values

    def train_config(self, round_index: int, train_file: Path, output: Path, init_from: Path | None,
                     resume: bool) -> TrainConfig:
        """The options of round ``round_index``'s committee training: the ``train`` mapping on
        ``train_file`` into ``output``, fine-tuning from the committee folder ``init_from`` (rounds ≥ 1);
        ``resume`` continues an interrupted one (else an earlier attempt's files are replaced)."""
        values = self._round_train_values(self.train, round_index, str(train_file), str(output),
                                          None if init_from is None else str(init_from))
        values.update(resume=resume, overwrite=not resume)
        return TrainConfig.from_dict(values, f"{self.source}: train (round {round_index})")

    def md_config(self) -> tuple[dict[str, Any], MDConfig]:
        """(run options: structure, device, dtype, compile, progress; the MDConfig of every round),
        the latter with the loop's max_force_uncertainty, uncertainty_action save and the seed."""
        run_keys = _field_names(MDRunSection)
        run = {**dataclasses.asdict(MDRunSection()), **{k: v for k, v in self.md.items() if k in run_keys}}
        settings = {k: v for k, v in self.md.items() if k not in run_keys}
        config = MDConfig(**{"seed": self.seed, **settings, "max_force_uncertainty": self.max_force_uncertainty,
                             "uncertainty_action": "save"})
        return run, config

    def reference_factory(self) -> Callable[[], Any]:
        """A function that builds a new reference calculator; ValueError (one line) when its module
        is not installed (naming what to pip install) or its class or keyword arguments are wrong."""
        return reference_factory(self.reference.calculator, self.reference.kwargs, f"{self.source}: reference")

    def to_dict(self) -> dict[str, Any]:
        """The resolved settings as plain data (OUTPUT/config.yaml)."""
        values = dataclasses.asdict(self)
        values.pop("source")
        return values


def load_learn_config(path: str | Path) -> LearnConfig:
    """The settings in a YAML file, with keys, types, ranges and inputs checked."""
    values = read_config_file(path)
    config = LearnConfig.from_dict(values, str(path))
    config.check_inputs()
    return config


def reference_factory(spec: str, kwargs: dict[str, Any], source: str = "reference") -> Callable[[], Any]:
    """A function returning a new ``Class(**kwargs)`` for ``spec`` "module:Class"; the module is
    imported now, and one calculator is built now to check the arguments."""
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        missing = err.name or module_name
        top = missing.split(".")[0]
        try:
            installed = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            installed = False
        if installed and missing != top:
            raise ValueError(f"{source}.calculator: cannot import {module_name!r}: {err}; check the module name "
                             f"(the {top} package is installed).") from None
        raise ValueError(f"{source}.calculator: cannot import {module_name!r} ({err}); install it: pip install "
                         f"{PIP_NAMES.get(top, top)}.") from None
    except Exception as err:  # a module that fails while importing
        raise ValueError(f"{source}.calculator: importing {module_name!r} failed ({type(err).__name__}: {err}).") from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        names = [name for name in dir(module) if not name.startswith("_")]
        close = difflib.get_close_matches(class_name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{source}.calculator: {module_name!r} has no calculator class {class_name!r}.{hint}")
    kwargs = dict(kwargs)

    def build():
        try:
            return cls(**kwargs)
        except Exception as err:  # calculators raise all kinds of errors for bad arguments
            raise ValueError(f"{source}: {spec}(**{kwargs}) fails: {type(err).__name__}: {err}".rstrip(".") + ".") from None

    build()
    return build


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name != "source"]


def _unknown(prefix: str, key: Any, known: list[str]) -> None:
    """ValueError for an unknown key, in the words of the train config (with a "did you mean")."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{prefix}{key}: unknown option.{hint} Known options: {', '.join(known)}.")


def _check_file(source: str, key: str, path: str) -> None:
    if not Path(path).is_file():
        what = "is a directory, not a file" if Path(path).is_dir() else "does not exist"
        raise FileNotFoundError(f"{source}: {key}: {path!r} {what}.")


def _symbol(number: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[number]
