"""Training options: one dataclass, read from plain YAML and overridden by command-line flags.

The YAML file holds plain data only (``yaml.safe_load``: no object construction). Every
top-level option is also a flag (``max_epochs`` ↔ ``--max-epochs``); the ``model:`` section
maps to ``--model`` (family), ``--cutoff`` and ``--hyper`` (a YAML mapping merged into
``model.hyper``). Unknown keys and values of the wrong type raise ``ValueError`` naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence, Union

import yaml

if TYPE_CHECKING:
    from ..data.labelled import LabelledStructure


def _option(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class ModelSection:
    """The ``model:`` section: family name, cutoff and the family's own hyper-parameters."""

    family: str = _option("mace", "model family (see eqcalc.models.MODEL_FAMILIES)")
    cutoff: float = _option(5.0, "interaction cutoff radius, Å")
    hyper: dict = _option(
        {}, "family hyper-parameters, e.g. {num_channels: 64}, over the family's training defaults (TRAINING_HYPER)"
    )
    outputs: list = _option(
        [], "tensor outputs beside the energy: dipole (with per-atom charges), polarizability (docs/responses.md)"
    )


#: hyper-parameters in which training's defaults differ from the family's own (``build_model``'s):
#: the size of the project's CPU recipes (docs/training.md)
TRAINING_HYPER = {"mace": {"num_channels": 32}}


def training_hyper(section: ModelSection) -> dict:
    """The hyper-parameters a training run builds its model with: the section's over :data:`TRAINING_HYPER`."""
    return {**TRAINING_HYPER.get(section.family, {}), **section.hyper}


#: loss weights of the project's recipes (docs/training.md) that ``auto`` resolves to: "molecules" when no
#: training structure is periodic, else "materials"; (eV/atom)^-2, (eV/Å)^-2, (eV/Å^3)^-2
RECIPE_WEIGHTS = {
    "molecules": {"energy_weight": 10.0, "forces_weight": 1000.0, "stress_weight": 1e4},
    "materials": {"energy_weight": 100.0, "forces_weight": 100.0, "stress_weight": 1e4},
}
#: weights of the tensor-output terms that ``auto`` resolves to where the model predicts them and the
#: data label them: (e·Å)^-2 and (Å^3)^-2
RESPONSE_WEIGHTS = {"dipole_weight": 1000.0, "polarizability_weight": 100.0}
#: with ``stage_two_epoch: auto``, stage two covers the last quarter of the schedule (MACE's SWA start) …
STAGE_TWO_SHARE = 0.25
#: … of a schedule of at least this many epochs
STAGE_TWO_MIN_EPOCHS = 8
#: ``max_epochs: auto`` without ``max_time``
DEFAULT_EPOCHS = 100


@dataclass
class TrainConfig:
    """Every training option with its default."""

    # data
    train: Union[str, None] = _option(None, "training data file (extxyz, ASE .db, eqcalc .h5, any ASE format)")
    valid: Union[str, None] = _option(None, "validation file; if absent a part of the training file is held out")
    test: Union[str, None] = _option(None, "test file evaluated with the best model at the end")
    valid_fraction: float = _option(0.05, "fraction of the training file held out for validation (no valid file)")
    valid_count: Union[int, None] = _option(None, "number of training structures held out (overrides valid_fraction)")
    train_count: Union[int, None] = _option(
        None, "train on a seeded random subset of this many structures (nested across counts: learning curves)"
    )
    energy_key: Union[str, None] = _option(None, "info key of the energy (default: ASE results, then REF_energy, energy)")
    forces_key: Union[str, None] = _option(None, "per-atom array of the forces (default: ASE results, then REF_forces, forces)")
    stress_key: Union[str, None] = _option(None, "info key of the stress (default: ASE results, then REF_stress, stress)")
    dipole_key: Union[str, None] = _option(None, "info key of the dipole, e·Å (default: ASE results, then REF_dipole, dipole)")
    polarizability_key: Union[str, None] = _option(
        None, "info key of the polarisability, Å³, 6 (Voigt) or 9 values (default: REF_polarizability, polarizability)"
    )
    outlier_threshold: Union[float, None] = _option(
        50.0, "refuse frames whose energy or forces lie this many robust σ from the rest (null: no check)"
    )
    # fine-tuning (see docs/finetuning.md)
    init_from: Union[str, None] = _option(
        None, "start from this eqcalc model file: its family, architecture and weights (fine-tuning); or a committee "
        "folder of the same size as committee: member k starts from its member k"
    )
    freeze: list = _option([], "fine-tuning: parameter-name prefixes or groups (embedding, interactions, readout) kept fixed")
    replay_data: Union[str, None] = _option(None, "fine-tuning: frames of the original training data mixed into each epoch")
    replay_fraction: float = _option(0.2, "replay frames per epoch, as a fraction of the training frames")
    # model
    model: ModelSection = field(default_factory=ModelSection, metadata={"help": "model family, cutoff, hyper"})
    dtype: Literal["float32", "float64"] = _option("float32", "precision of the model")
    atomic_energies: Union[str, dict] = _option(
        "auto", "per-element E0: auto | isolated | least_squares | keep (init_from's) | mapping element → eV"
    )
    energy_scale: Union[float, Literal["auto"]] = _option("auto", "eV per network unit; auto = RMS force")
    avg_num_neighbors: Union[float, Literal["auto"]] = _option("auto", "neighbour-sum normaliser; auto = from data")
    refit_atomic_energies: Union[bool, Literal["auto"]] = _option(
        "auto", "after training, shift E0 by least squares so that the best model's mean energy error on the training "
        "set is zero (forces unchanged); auto = when E0 were fitted to the data (atomic_energies auto or least_squares)"
    )
    # loss
    energy_weight: Union[float, Literal["auto"]] = _option(
        "auto", "weight of the energy-per-atom MSE, (eV/atom)^-2; auto = the recipe's: 10 for molecules (no periodic "
        "training structure), 100 for materials, 0 without energy labels"
    )
    forces_weight: Union[float, Literal["auto"]] = _option(
        "auto", "weight of the force-component MSE, (eV/Å)^-2; auto = 1000 for molecules, 100 for materials, 0 without "
        "force labels"
    )
    stress_weight: Union[float, Literal["auto"]] = _option(
        "auto", "weight of the stress-component MSE, (eV/Å^3)^-2; auto = 1e4, 0 without stress labels"
    )
    dipole_weight: Union[float, Literal["auto"]] = _option(
        "auto", "weight of the dipole-component MSE, (e·Å)^-2; auto = 1000 where model.outputs has dipole, else 0"
    )
    polarizability_weight: Union[float, Literal["auto"]] = _option(
        "auto", "weight of the polarisability-component MSE, (Å^3)^-2; auto = 100 where model.outputs has "
        "polarizability, else 0"
    )
    stage_two_epoch: Union[int, None, Literal["auto"]] = _option(
        "auto", "from this epoch on (counted from 0) use the stage-two weights; the best model is chosen among those "
        "epochs (null: one stage; auto: the last quarter of a schedule of 8 epochs or more, on the time budget with max_time)"
    )
    stage_two_energy_weight: float = _option(1000.0, "stage two: weight of the energy-per-atom MSE, (eV/atom)^-2")
    stage_two_forces_weight: float = _option(100.0, "stage two: weight of the force-component MSE, (eV/Å)^-2")
    loss: Literal["mse", "huber"] = _option("mse", "mse or huber (per component)")
    huber_delta: float = _option(0.01, "Huber transition point in the label's units")
    # optimisation
    batch_size: int = _option(5, "structures per batch (per process with torchrun)")
    valid_batch_size: Union[int, None] = _option(None, "validation batch size (default: batch_size)")
    max_epochs: Union[int, Literal["auto"]] = _option(
        "auto", "number of epochs; auto = 100, or with max_time as many as the budget holds at the speed of epoch 2 "
        "(the schedule is planned on that number)"
    )
    lr: float = _option(0.01, "AdamW learning rate")
    weight_decay: float = _option(0.0, "AdamW decoupled weight decay")
    amsgrad: bool = _option(True, "use the AMSGrad variant of AdamW")
    scheduler: Literal["plateau", "cosine", "none"] = _option("cosine", "learning-rate schedule after warm-up")
    warmup_epochs: int = _option(5, "epochs of linear learning-rate warm-up")
    plateau_factor: float = _option(0.8, "plateau: multiply the rate by this when validation stalls")
    plateau_patience: int = _option(10, "plateau: epochs without improvement before reducing")
    min_lr: float = _option(1e-5, "lowest learning rate (cosine end point, plateau floor)")
    clip_grad_norm: Union[float, None] = _option(10.0, "clip the gradient norm to this (null: no clipping)")
    ema_decay: Union[float, None] = _option(0.99, "exponential moving average of weights (null: off)")
    early_stopping_patience: Union[int, None] = _option(
        None, "stop after this many epochs without improvement (null: the whole schedule)"
    )
    max_time: Union[float, None] = _option(
        None, "minutes of training for the run (across --resume); the schedule follows the time spent; stops after "
        "the epoch that passes it (null: no limit)"
    )
    # run
    seed: int = _option(0, "seed of initial weights, data split and shuffling")
    device: str = _option("auto", "cpu, cuda, cuda:1 … or auto")
    kernels: bool = _option(
        True,
        "on CPU, run the irreps convolutions (nequip, mace) and the MACE product basis on eqcalc's kernels: "
        "the torch path's gradients, faster",
    )
    output: str = _option("runs/train", "output folder (checkpoint.pt, best_model.pt, metrics.csv)")
    resume: bool = _option(False, "continue from OUTPUT/checkpoint.pt")
    overwrite: bool = _option(False, "replace a run already in OUTPUT")
    progress: bool = _option(True, "show a progress bar per epoch")
    tensorboard: bool = _option(False, "also write TensorBoard scalars to OUTPUT/tensorboard")
    # committee (see eqcalc.train.committee)
    committee: int = _option(
        1, "train this many models, one complete run each in OUTPUT/member_0 … with seed, seed+1 …, on one data "
        "split; OUTPUT/committee.json lists them once all have finished (1: a single run in OUTPUT)"
    )
    committee_bootstrap: bool = _option(
        False, "committee: train each member on a resample with replacement (same count, seeded by its seed) of the "
        "training split (flag also --bootstrap)"
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML- and torch.load(weights_only=True)-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build and validate from a plain dict; unknown keys and wrong types raise ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a mapping of options, got {type(values).__name__}.")
        values = dict(values)
        model = values.pop("model", {})
        if isinstance(model, str):
            model = {"family": model}
        if not isinstance(model, dict):
            raise ValueError(f"{source}: 'model' must be a mapping with family, cutoff, hyper.")
        model = _checked(ModelSection, model, f"{source}: model.")
        options = _checked(cls, values, f"{source}: ", skip=("model",))
        if options.get("init_from") is not None:
            model, options = _finetuning_options(model, options, source)
        config = cls(model=ModelSection(**model), **options)
        config.check_ranges()
        if config.init_from is None:
            _check_model_builds(config.model, source)
        return config

    def check_ranges(self) -> None:
        """Raise ValueError naming the first option whose value is out of range."""
        rules = [
            ("batch_size", self.batch_size >= 1, "≥ 1"),
            ("valid_batch_size", self.valid_batch_size is None or self.valid_batch_size >= 1, "≥ 1"),
            ("max_epochs", self.max_epochs == "auto" or self.max_epochs >= 0, "≥ 0 or auto"),
            ("lr", self.lr > 0, "> 0"),
            ("min_lr", 0 <= self.min_lr <= self.lr, "in [0, lr]"),
            ("valid_fraction", 0 <= self.valid_fraction < 1, "in [0, 1)"),
            ("ema_decay", self.ema_decay is None or 0 < self.ema_decay < 1, "in (0, 1)"),
            ("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)"),
            ("huber_delta", self.huber_delta > 0, "> 0"),
            ("early_stopping_patience", self.early_stopping_patience is None or self.early_stopping_patience >= 1, "≥ 1"),
            ("max_time", self.max_time is None or self.max_time > 0, "> 0"),
            ("outlier_threshold", self.outlier_threshold is None or self.outlier_threshold > 0, "> 0 or null"),
            ("stage_two_epoch", self.stage_two_epoch in (None, "auto") or self.stage_two_epoch >= 0,
             "≥ 0 (counted from 0), null or auto"),
            ("model.cutoff", self.model.cutoff > 0, "> 0"),
            ("committee", self.committee >= 1, "≥ 1"),
            ("max_epochs", self.committee == 1 or self.max_epochs == "auto" or self.max_epochs >= 1,
             "≥ 1 for a committee (each member needs a model)"),
        ]
        for name, ok, wanted in rules:
            if not ok:
                raise ValueError(f"{name} must be {wanted}.")
        for name in ("energy_weight", "forces_weight", "stress_weight", "dipole_weight", "polarizability_weight",
                     "stage_two_energy_weight",
                     "stage_two_forces_weight", "weight_decay", "warmup_epochs"):
            if getattr(self, name) != "auto" and getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0.")
        for quantity in ("dipole", "polarizability"):
            weight = getattr(self, f"{quantity}_weight")
            if weight != "auto" and weight > 0 and quantity not in self.model.outputs:
                raise ValueError(f"{quantity}_weight is {weight:g}, but the model does not predict the {quantity}; add "
                                 f"{quantity} to model.outputs, or drop {quantity}_weight.")
        if self.train is None:
            raise ValueError("No training data: set train: FILE in the config or pass --train FILE.")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or replace it.")
        if not 0 <= self.replay_fraction <= 1:
            raise ValueError("replay_fraction must be in [0, 1].")
        if self.committee_bootstrap and self.committee == 1:
            raise ValueError("committee_bootstrap resamples the training frames of each committee member; set committee: N "
                             "(--committee N) with N ≥ 2, or drop it.")
        if self.init_from is None:
            for name, used in (("freeze", bool(self.freeze)), ("replay_data", self.replay_data is not None),
                               ("atomic_energies", self.atomic_energies == "keep")):
                if used:
                    raise ValueError(f"{name}: {getattr(self, name)!r} needs a base model; set init_from: MODEL.pt.")


def with_recipe_weights(config: TrainConfig, structures: Sequence[LabelledStructure]) -> TrainConfig:
    """``config`` with each ``auto`` loss weight replaced by the recipe's (:data:`RECIPE_WEIGHTS`) for these
    training structures, "materials" if any is periodic, else "molecules"; the tensor outputs' weights
    (:data:`RESPONSE_WEIGHTS`) where ``model.outputs`` names them; 0 for a label none of them has."""
    recipe = dict(RECIPE_WEIGHTS["materials" if any(s.pbc.any() for s in structures) else "molecules"])
    recipe.update({name: weight for name, weight in RESPONSE_WEIGHTS.items()
                   if name.removesuffix("_weight") in config.model.outputs})
    resolved = {}
    for name in (*RECIPE_WEIGHTS["molecules"], *RESPONSE_WEIGHTS):
        if getattr(config, name) == "auto":
            quantity = name.removesuffix("_weight")
            labelled = any(getattr(s, quantity) is not None for s in structures)
            resolved[name] = recipe[name] if labelled and name in recipe else 0.0
    return dataclasses.replace(config, **resolved)


#: a model section is tried before any data is read, with one element, and may ask for no tensor
#: larger than this (elements): far above any trainable model, far below what exhausts memory
MODEL_CHECK_ELEMENTS = 1 << 26


def _check_model_builds(section: ModelSection, source: str) -> None:
    """ValueError naming the model section when its family, cutoff and hyper do not build a model
    (unknown family or names, text where a number belongs, negative or absurd sizes)."""
    from ..models.allocation import AllocationLimit
    from ..models.registry import MODEL_FAMILIES, build_model

    if section.family not in MODEL_FAMILIES:
        raise ValueError(f"{source}: model.family: unknown family {section.family!r}; available: {sorted(MODEL_FAMILIES)}.")
    try:
        with AllocationLimit(MODEL_CHECK_ELEMENTS):
            build_model(section.family, species=[1], cutoff=section.cutoff, outputs=section.outputs,
                        **training_hyper(section))
    except (ValueError, TypeError, RuntimeError) as err:
        known = [name for name in inspect.signature(MODEL_FAMILIES[section.family]).parameters if name != "species"]
        unknown = [key for key in section.hyper if key not in known]
        close = difflib.get_close_matches(unknown[0], known, n=1) if unknown else []
        hint = f" Did you mean {close[0]!r} for {unknown[0]!r}?" if close else ""
        raise ValueError(
            f"{source}: model: the {section.family} family cannot be built with cutoff {section.cutoff}, hyper "
            f"{section.hyper} and outputs {section.outputs} ({err}).{hint} Check the names and values against "
            f"docs/models.md."
        ) from None


def _finetuning_options(model: dict, options: dict, source: str) -> tuple[dict, dict]:
    """With ``init_from``: the base model's model section (a contradicting one is an error), its dtype
    unless one is given, and ``freeze`` checked against its parameter names. A committee folder as
    ``init_from`` needs ``committee`` equal to its size and members of one architecture."""
    from ..committee import resolve_models
    from ..models.io import read_model_file
    from .finetune import base_model_section, resolve_freeze

    init_from = options["init_from"]
    bases = resolve_models(init_from)
    if isinstance(bases, list) and options.get("committee", 1) != len(bases):
        raise ValueError(
            f"{source}: init_from: {init_from!r} is a committee of {len(bases)}; set committee: {len(bases)} "
            f"(--committee {len(bases)}) so that member k fine-tunes from its member k, or name one model file."
        )
    payloads = [read_model_file(base) for base in (bases if isinstance(bases, list) else [init_from])]
    sections = [base_model_section(payload, model, source) for payload in payloads]
    for k, other in enumerate(sections[1:], start=1):
        if other != sections[0]:
            raise ValueError(f"{source}: init_from: the members of {init_from!r} differ in architecture (member 0: "
                             f"{sections[0]}; member {k}: {other}); fine-tune a committee of one architecture.")
    payload, section = payloads[0], sections[0]
    options = {"dtype": payload["dtype"], **options}
    freeze = options.get("freeze") or []
    if not all(isinstance(entry, str) for entry in freeze):
        raise ValueError(f"{source}: freeze: expected a list of names, got {freeze!r}.")
    resolve_freeze(section["family"], freeze, payload["state_dict"])
    return section, options


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else hint.__name__


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(matches, value) for ``value`` against a type hint; "1e-3" counts as a float (PyYAML quirk)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, coerced = _coerce(value, arm)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in typing.get_args(hint), value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    return isinstance(value, hint), value


#: option names of mace-torch and NequIP configs → eqcalc's, for "did you mean"
PEER_NAMES = {
    "learning_rate": "lr", "max_num_epochs": "max_epochs", "r_max": "cutoff", "train_file": "train",
    "valid_file": "valid", "test_file": "test", "ema": "ema_decay", "patience": "early_stopping_patience",
    "clip_grad": "clip_grad_norm", "E0s": "atomic_energies", "default_dtype": "dtype",
    "foundation_model": "init_from", "n_train": "train_count", "scaling": "energy_scale",
}


def _checked(cls: type, values: dict[str, Any], prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    checked = {}
    for key, value in values.items():
        if key not in known:
            close = [PEER_NAMES[key]] if PEER_NAMES.get(key) in known else difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{prefix}{key}: unknown option.{hint} Known options: {', '.join(known)}.")
        ok, coerced = _coerce(value, hints[key])
        if not ok:
            raise ValueError(f"{prefix}{key}: expected {_describe(hints[key])}, got {value!r} ({type(value).__name__}).")
        checked[key] = coerced
    return checked


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The plain dict in a YAML config file (empty file → {})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} does not exist.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{str(path)!r} is not valid YAML (only plain data is allowed): {err}") from err
    return {} if values is None else values


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Options from a YAML file (optional) with ``overrides`` applied on top; ``model`` merges key by key."""
    values = read_config_file(path) if path is not None else {}
    source = str(path) if path is not None else "options"
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of options at the top level.")
    overrides = dict(overrides or {})
    model_overrides = dict(overrides.pop("model", {}))
    values.update(overrides)
    if model_overrides:
        model = values.get("model") or {}
        model = {"family": model} if isinstance(model, str) else dict(model)
        hyper = model_overrides.pop("hyper", None)
        model.update(model_overrides)
        if hyper is not None:
            model["hyper"] = {**(model.get("hyper") or {}), **hyper}
        values["model"] = model
    return TrainConfig.from_dict(values, source)


# ---------------------------------------------------------------- command line

#: more flags for an option than its own (``--committee-bootstrap``)
FLAG_ALIASES = {"committee_bootstrap": ("--bootstrap",)}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option (``--max-epochs``), plus ``--model``, ``--cutoff``, ``--hyper`` for the model section."""
    parser.add_argument("config", nargs="?", help="YAML config file (flags override its values)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model":
            continue
        flags = ("--" + f.name.replace("_", "-"), *FLAG_ALIASES.get(f.name, ()))
        help_text = f"{f.metadata['help']} (default: {f.default!r})" if f.default is not dataclasses.MISSING else f.metadata["help"]
        if hints[f.name] is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, help=help_text)
    from ..models.registry import MODEL_FAMILIES

    parser.add_argument(
        "--model", dest="model_family", default=argparse.SUPPRESS, metavar="FAMILY",
        help=f"model family: {', '.join(sorted(MODEL_FAMILIES))} (default: {ModelSection.family!r}; the family's "
        "hyper-parameters default to docs/models.md's tables)",
    )
    parser.add_argument(
        "--cutoff", dest="model_cutoff", default=argparse.SUPPRESS, metavar="Å",
        help=f"cutoff radius, Å (default: {ModelSection.cutoff})",
    )
    parser.add_argument(
        "--hyper", dest="model_hyper", default=argparse.SUPPRESS, metavar="YAML",
        help="model hyper-parameters as a YAML mapping, merged into model.hyper: '{num_features: 32}'",
    )
    parser.add_argument(
        "--outputs", dest="model_outputs", nargs="+", default=argparse.SUPPRESS, metavar="NAME",
        help="tensor outputs beside the energy (model.outputs): dipole, polarizability",
    )


NULL_WORDS = ("null", "none", "~")


def _parse_flag(text: str, hint: Any) -> Any:
    """A flag's text as the option's type. Where the option takes text (paths, names) it stays
    text, except null words and YAML mappings ('{H: -13.6}'); anything else is read as YAML."""
    takes_text = hint is str or (typing.get_origin(hint) in (Union, types.UnionType) and str in typing.get_args(hint))
    if takes_text and hint is not str and (text.lower() in NULL_WORDS or text.lstrip().startswith("{")):
        takes_text = False
    if takes_text:
        return text
    value = yaml.safe_load(text)
    return None if isinstance(value, str) and value.lower() in NULL_WORDS else value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file named on the command line (if any) with the given flags applied."""
    hints = typing.get_type_hints(TrainConfig)
    overrides: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model" and hasattr(args, f.name):
            text = getattr(args, f.name)
            overrides[f.name] = text if isinstance(text, bool) else _parse_flag(text, hints[f.name])
    model: dict[str, Any] = {}
    if hasattr(args, "model_family"):
        model["family"] = args.model_family
    if hasattr(args, "model_cutoff"):
        model["cutoff"] = yaml.safe_load(args.model_cutoff)
    if hasattr(args, "model_hyper"):
        hyper = yaml.safe_load(args.model_hyper)
        if not isinstance(hyper, dict):
            raise ValueError(f"--hyper: expected a YAML mapping like '{{num_features: 32}}', got {args.model_hyper!r}.")
        model["hyper"] = hyper
    if hasattr(args, "model_outputs"):
        model["outputs"] = list(args.model_outputs)
    if model:
        overrides["model"] = model
    return load_config(getattr(args, "config", None), overrides)
