"""The training loop: AdamW on a weighted energy/force/stress loss, EMA, schedules, checkpoints.

Output folder:
    checkpoint.pt   after every epoch (atomic): continue with --resume, exactly
    best_model.pt   model file of the best validation loss (EMA weights), for eqcalc.load_model
    metrics.csv     one row per epoch
"""

from __future__ import annotations

import csv
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from ..atomic_io import append_csv_row, write_csv
from ..data.graph import AtomicGraph
from ..data.labels import Labels, collate
from ..inference import inference_model
from ..models.base import AtomisticModel
from ..models.io import load_model, model_from_payload, model_payload, read_model_file, resolve_dtype, save_model
from ..models.registry import MODEL_FAMILIES, build_model
from ..properties import compute_properties_and_responses
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import DEFAULT_EPOCHS, STAGE_TWO_MIN_EPOCHS, STAGE_TWO_SHARE, TrainConfig, training_hyper, with_recipe_weights
from .data import TrainingData, load_training_data
from .distributed import DistributedContext, init_distributed
from .ema import ExponentialMovingAverage
from .evaluate import format_error_table, grouped_errors, predict
from .finetune import freeze_parameters, model_from_base, resolve_freeze
from .loss import TERMS, WeightedLoss, label_counts
from .metrics import ErrorAccumulator
from .replay import ReplaySampler
from .run_folder import (
    CONFIG_NAME, LOG_NAME, PLOT_NAME, SPLITS_NAME, RunLog, plot_metrics, remove_run, write_run_config, write_splits,
)
from .schedule import LearningRateSchedule
from .statistics import compute_statistics, least_squares_atomic_energies

#: with max_epochs auto and max_time, the epoch after which the number of epochs is planned (epoch 1 pays the set-up)
PLAN_EPOCH = 2
CHECKPOINT_NAME = "checkpoint.pt"
BEST_MODEL_NAME = "best_model.pt"
METRICS_NAME = "metrics.csv"
METRICS_COLUMNS = [
    "epoch", "lr", "train_loss", "valid_loss",
    "valid_e_mae_meV_atom", "valid_e_rmse_meV_atom", "valid_f_mae_meV_A", "valid_f_rmse_meV_A",
    "valid_s_mae_GPa", "valid_s_rmse_GPa", "valid_mu_mae_me_A", "valid_mu_rmse_me_A",
    "valid_alpha_mae_A3", "valid_alpha_rmse_A3", "seconds",
]
#: the files of a run that --overwrite removes before a new run starts in the folder
RUN_FILES = [CHECKPOINT_NAME, BEST_MODEL_NAME, METRICS_NAME, LOG_NAME, CONFIG_NAME, SPLITS_NAME, PLOT_NAME]
# Options that may change between a run and its resumption; any other difference is an error.
#: a batch loss this many times the first batch loss of its loss stage means training diverged
DIVERGENCE_FACTOR = 1e4
RESUMABLE_CHANGES = {"overwrite", "max_epochs", "max_time", "resume", "progress", "device", "tensorboard", "early_stopping_patience", "output", "test"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_resumable_options(saved: dict, config: TrainConfig, source: Path) -> None:
    """ValueError naming every option of ``config`` that differs from the ``saved`` options of the run
    in ``source``, other than :data:`RESUMABLE_CHANGES`."""
    # An option missing from the saved ones was added after they were written; such options default to
    # the behaviour that existed before them, so the run used the default.
    saved = {**TrainConfig().to_dict(), **saved}
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved[k] != current[k])
    if changed:
        details = "; ".join(f"{k}: {saved[k]!r} → {current[k]!r}" for k in changed)
        raise ValueError(
            f"Cannot resume {str(source)!r} with different options ({details}). Use the original options, "
            "or start a new run in another --output."
        )


def build_family_model(config: TrainConfig, model_kwargs: dict) -> AtomisticModel:
    """``build_model`` with the config's family, cutoff and hyper; unknown hyper keys named in the error."""
    family = config.model.family
    if family not in MODEL_FAMILIES:
        raise ValueError(f"model.family: unknown family {family!r}; available: {sorted(MODEL_FAMILIES)}.")
    reserved = set(model_kwargs) | {"cutoff"}
    clash = sorted(reserved & set(config.model.hyper))  # TRAINING_HYPER never names them
    if clash:
        raise ValueError(f"model.hyper: {clash} are set from the data or model.cutoff; remove them from hyper.")
    try:
        return build_model(family, cutoff=config.model.cutoff, outputs=config.model.outputs, **model_kwargs,
                           **training_hyper(config.model))
    except TypeError as err:
        raise ValueError(f"model.hyper: {err}. Check the {family} hyper-parameter names.") from err


class Trainer:
    """Everything one training run needs; ``fit()`` runs it.

    Args:
        config: the options.
        context: process placement (default: from the torchrun environment, or a single process).
        data: pre-loaded data sets (default: read the files named in ``config``).
        log: where messages go (rank 0 only).
    """

    def __init__(
        self,
        config: TrainConfig,
        context: DistributedContext | None = None,
        data: TrainingData | None = None,
        log=print,
    ):
        self.context = context or init_distributed(config.device)
        self.device = self.context.device
        self.output = Path(config.output)
        self._log = RunLog(log)
        self.data = data or load_training_data(config)
        self.config = config = with_recipe_weights(config, self.data.train.structures)
        self.log(
            f"Data: {len(self.data.train)} training, {len(self.data.valid)} validation"
            + (f", {len(self.data.test)} test" if self.data.test is not None else "")
            + " structures."
        )
        seed_everything(config.seed)
        checkpoint = self._checkpoint_to_resume()
        if self.context.is_main:
            self._claim_output(resumed=checkpoint is not None)
        if checkpoint is not None:
            model = model_from_payload(checkpoint["model"])
        elif config.init_from is not None:
            model = self._base_model()
        else:
            statistics = compute_statistics(
                self.data.train,
                self.data.species,
                atomic_energies=config.atomic_energies,
                energy_scale=config.energy_scale,
                avg_num_neighbors=config.avg_num_neighbors,
            )
            self.log(statistics.summary())
            model = build_family_model(config, statistics.model_kwargs())
        self.model = model.to(device=self.device, dtype=resolve_dtype(config.dtype))
        if self.model.set_kernels(config.kernels and self.device.type == "cpu"):
            self.log("The irreps convolutions train on eqcalc's CPU kernels (kernels: false for the torch path).")
        names = [name for name, _ in self.model.named_parameters()]
        frozen = freeze_parameters(self.model, resolve_freeze(config.model.family, config.freeze, names))
        if frozen:
            self.log(f"Frozen: {len(frozen)} of {len(names)} parameter tensors ({', '.join(config.freeze)}).")
        self.context.broadcast_parameters(self.model)
        self.stage_two_start: int | None = None  # the epoch stage two started in (or starts in, old checkpoints)
        self.epoch_speed: tuple[int, float, float] | None = None  # see planned_epochs
        self.loss_fn = self.loss_for_epoch(0)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.lr, weight_decay=config.weight_decay, amsgrad=config.amsgrad,
        )
        self.schedule = LearningRateSchedule(
            config.lr,
            config.scheduler,
            max_epochs=DEFAULT_EPOCHS if config.max_epochs == "auto" else config.max_epochs,
            warmup_epochs=config.warmup_epochs,
            min_lr=config.min_lr,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
        )
        self.ema = ExponentialMovingAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.epoch = 0
        self.best_valid_loss = math.inf
        self.epochs_without_improvement = 0
        self.reference_loss: float | None = None  # first batch loss of the current loss stage
        self.seconds_spent = 0.0  # wall time of the completed epochs (rank 0's), across resumes
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.data.replay is None:
            epoch_data = self.data.train
            self.train_sampler = DistributedSampler(
                self.data.train,
                num_replicas=self.context.world_size,
                rank=self.context.rank,
                shuffle=True,
                seed=config.seed,
            )
        else:
            epoch_data = ConcatDataset([self.data.train, self.data.replay])
            self.train_sampler = ReplaySampler(
                len(self.data.train), len(self.data.replay), config.replay_fraction, config.seed,
                num_replicas=self.context.world_size, rank=self.context.rank,
            )
            self.log(f"Replay: {self.train_sampler.count} of {len(self.data.replay)} frames of {config.replay_data} "
                     "mixed into each epoch.")
        self.train_loader = DataLoader(
            epoch_data, batch_size=config.batch_size, sampler=self.train_sampler, collate_fn=collate
        )
        shard = range(self.context.rank, len(self.data.valid), self.context.world_size)
        self.valid_loader = DataLoader(
            Subset(self.data.valid, list(shard)),
            batch_size=config.valid_batch_size or config.batch_size,
            shuffle=False,
            collate_fn=collate,
        )
        self.tensorboard = self._tensorboard_writer() if config.tensorboard and self.context.is_main else None

    # ------------------------------------------------------------ set-up helpers

    def log(self, message: str) -> None:
        if self.context.is_main:
            self._log(message)

    def _base_model(self) -> AtomisticModel:
        """The ``init_from`` model with E0 re-fitted to the training data (unless ``atomic_energies: keep``)."""
        config = self.config
        species = sorted(set(self.data.species) | set(self.data.replay.species() if self.data.replay else []))
        refitted = None
        if config.atomic_energies != "keep":
            statistics = compute_statistics(
                self.data.train, self.data.species, atomic_energies=config.atomic_energies,
                energy_scale=1.0, avg_num_neighbors=1.0,  # both kept from the base model
            )
            refitted = dict(zip(statistics.species, statistics.atomic_energies))
        model = model_from_base(read_model_file(config.init_from), species, refitted, config.init_from, config.model.outputs)
        e0 = "kept from the base model" if refitted is None else f"re-fitted ({statistics.atomic_energies_source})"
        self.log(f"Fine-tuning {config.init_from} ({model.family}): reference energies {e0}; energy scale "
                 f"{float(model.energy_scale):.6g} eV and average neighbours {model.avg_num_neighbors:.4f} kept.")
        return model

    def _claim_output(self, resumed: bool) -> None:
        """Make the run folder (emptied of an earlier run's files with ``overwrite``), start its
        train.log and write config.yaml and splits.json."""
        self.output.mkdir(parents=True, exist_ok=True)
        if self.config.overwrite and not resumed:
            remove_run(self.output, RUN_FILES)
        self._log.open(self.output)
        write_run_config(self.output, self.config.to_dict())
        write_splits(self.output, self.data.splits)

    def _checkpoint_to_resume(self) -> dict | None:
        path = self.output / CHECKPOINT_NAME
        if not self.config.resume:
            if path.exists() and not self.config.overwrite:
                raise ValueError(
                    f"{str(path)!r} exists: this output folder holds a run. Continue it with --resume, "
                    "replace it with --overwrite, or choose another --output."
                )
            return None
        checkpoint = load_checkpoint(path)
        check_resumable_options(checkpoint["config"], self.config, path)
        self.log(f"Resuming from {path} after epoch {checkpoint['epoch']}.")
        return checkpoint

    def _load_state(self, checkpoint: dict) -> None:
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.schedule.load_state_dict(checkpoint["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.epoch = int(checkpoint["epoch"])
        self.best_valid_loss = float(checkpoint["best_valid_loss"])
        self.epochs_without_improvement = int(checkpoint["epochs_without_improvement"])
        planned_start = self.config.stage_two_epoch if isinstance(self.config.stage_two_epoch, int) else None
        self.stage_two_start = checkpoint.get("stage_two_start", planned_start)
        self.epoch_speed = tuple(checkpoint["epoch_speed"]) if checkpoint.get("epoch_speed") is not None else None
        self.reference_loss = checkpoint.get("reference_loss")
        self.seconds_spent = float(checkpoint.get("seconds_spent", 0.0))
        restore_rng_state(checkpoint["rng"])

    def _tensorboard_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ValueError("tensorboard: the tensorboard package is not installed (pip install tensorboard).") from err
        return SummaryWriter(str(self.output / "tensorboard"))

    # ------------------------------------------------------------ steps

    def loss_for_epoch(self, epoch: int) -> WeightedLoss:
        """The loss of ``epoch``: the stage-two energy/force weights from ``stage_two_epoch`` on
        (MACE's recipe: a last stretch that weights energies far more; it starts earlier when early
        stopping ends stage one), else the first-stage ones."""
        config = self.config
        stage_two = self.stage_two_start is not None and epoch >= self.stage_two_start
        energy = config.stage_two_energy_weight if stage_two else config.energy_weight
        forces = config.stage_two_forces_weight if stage_two else config.forces_weight
        return WeightedLoss(energy, forces, config.stress_weight, config.dipole_weight, config.polarizability_weight,
                            config.loss, config.huber_delta)

    def compute_gradients(self, graph: AtomicGraph, labels: Labels) -> torch.Tensor:
        """Loss of one (per-process) batch and its gradient, averaged over processes.

        The loss is normalised by the label counts of the whole distributed batch, so the
        averaged gradient equals that of one process holding all of it. Returns this
        process's share of the loss (detached).
        """
        graph, labels = graph.to(self.device), labels.to(self.device)
        counts = self.context.all_reduce_sum(label_counts(labels))
        stress = self.config.stress_weight > 0 and bool(labels.has_stress.any())
        self.optimizer.zero_grad(set_to_none=True)
        predicted = compute_properties_and_responses(
            self.model, graph, labels.charge, forces=self.loss_fn.forces_weight > 0, stress=stress, training=True
        )
        loss = self.loss_fn(predicted, labels, counts, scale=self.context.world_size)
        loss.backward()
        self.context.average_gradients(self.model)
        return loss.detach()

    def train_step(self, graph: AtomicGraph, labels: Labels) -> torch.Tensor:
        """One optimiser step (gradients, clipping, AdamW, EMA); returns this process's loss share."""
        loss = self.compute_gradients(graph, labels)
        if self.config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def train_epoch(self, epoch: int) -> float:
        """One pass over the (shuffled) training set; returns the mean batch loss."""
        self.model.train()
        self.train_sampler.set_epoch(epoch)
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.planned_epochs or '?'}",
            disable=not (self.config.progress and self.context.is_main and sys.stderr.isatty()),
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        total = torch.zeros(2, dtype=torch.float64)
        for graph, labels in bar:
            loss = float(self.train_step(graph, labels))
            self._check_divergence(loss, epoch)
            total += torch.tensor([loss / self.context.world_size, 1.0], dtype=torch.float64)
            bar.set_postfix(loss=f"{total[0] * self.context.world_size / total[1]:.4g}")
        total = self.context.all_reduce_sum(total)
        return float(total[0] / (total[1] / self.context.world_size))

    def _check_divergence(self, loss: float, epoch: int) -> None:
        """FloatingPointError (on every process alike) once a batch loss is not finite or exceeds
        :data:`DIVERGENCE_FACTOR` × the first batch loss of the current loss stage."""
        if self.reference_loss is None and math.isfinite(loss):
            self.reference_loss = loss
        grown = not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * self.reference_loss
        if not self.context.all_reduce_sum(torch.tensor([float(grown)], dtype=torch.float64)).item():
            return
        if math.isfinite(loss):
            what = f"grew from {self.reference_loss:.3g} (first batch) to {loss:.3g}"
        else:
            what = f"became {loss}"
        best = self.output / BEST_MODEL_NAME
        kept = f" {best} holds the best model of the epochs before." if self.epoch and best.exists() else ""
        raise FloatingPointError(
            f"The training loss {what} in epoch {epoch + 1}: training diverged. Lower --lr (now "
            f"{self.config.lr:g}), keep --clip-grad-norm on, or check the data for outliers.{kept}"
        )

    def validate(self) -> tuple[float, dict[str, float]]:
        """(loss, error summary) of the validation set with the averaged (EMA) weights."""
        self.model.eval()
        sums = torch.zeros(len(TERMS), dtype=torch.float64)
        counts = torch.zeros(len(TERMS), dtype=torch.float64)
        errors = ErrorAccumulator()
        for graph, labels in self.valid_loader:
            graph, labels = graph.to(self.device), labels.to(self.device)
            predicted = compute_properties_and_responses(
                self.model, graph, labels.charge, forces=True, stress=bool(labels.has_stress.any())
            )
            predicted = {k: v.detach() for k, v in predicted.items()}
            sums += self.loss_fn.term_sums(predicted, labels).cpu()
            counts += label_counts(labels).cpu()
            errors.update(predicted, labels)
        sums = self.context.all_reduce_sum(sums)
        counts = self.context.all_reduce_sum(counts)
        errors.merge_tensor(self.context.all_reduce_sum(errors.as_tensor()))
        return float(self.loss_fn.combine(sums, counts)), errors.summary()

    def averaged_model(self):
        """Context in which ``self.model`` holds the EMA weights (or nothing changes without EMA)."""
        return nullcontext(self.model) if self.ema is None else self.ema.applied(self.model)

    # ------------------------------------------------------------ loop

    def fit(self) -> dict:
        """Train until max_epochs or early stopping; returns a summary of the run."""
        config = self.config
        if self.context.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            self._trim_metrics()
        patience = config.early_stopping_patience
        self._log_plan()
        while self.planned_epochs is None or self.epoch < self.planned_epochs:
            epoch = self.epoch
            in_stage_two = self.stage_two_start is not None and epoch >= self.stage_two_start
            if patience is not None and self.epochs_without_improvement >= patience:
                if in_stage_two or self.stage_two_position() is None:
                    self.log(f"Stopped early: no improvement for {patience} epochs.")
                    break
                self.log(f"Stage one stopped improving for {patience} epochs: stage two starts now.")
                self.stage_two_start = epoch
            start = time.perf_counter()
            position = self.schedule_position(epoch)
            threshold = self.stage_two_position()
            if threshold is not None and position >= threshold and (self.stage_two_start is None or epoch < self.stage_two_start):
                self.stage_two_start = epoch
            self.loss_fn = self.loss_for_epoch(epoch)
            if epoch == self.stage_two_start:  # a new loss: best model, plateau, patience and divergence start afresh
                self.best_valid_loss, self.epochs_without_improvement = math.inf, 0
                self.reference_loss = None
                self.schedule.restart_plateau()
                self.log(f"Stage two from epoch {epoch + 1}: energy weight {config.stage_two_energy_weight:g}, "
                         f"forces weight {config.stage_two_forces_weight:g}.")
            self.schedule.max_epochs = self.planned_epochs or DEFAULT_EPOCHS
            lr = self.schedule.lr(position)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            train_loss = self.train_epoch(epoch)
            with self.averaged_model():
                if len(self.data.valid):
                    valid_loss, errors = self.validate()
                else:
                    valid_loss, errors = train_loss, ErrorAccumulator().summary()
                improved = valid_loss < self.best_valid_loss
                if improved and self.context.is_main:
                    save_model(self.model, self.output / BEST_MODEL_NAME)
            self.schedule.step(epoch, valid_loss)
            if improved:
                self.best_valid_loss, self.epochs_without_improvement = valid_loss, 0
            else:
                self.epochs_without_improvement += 1
            self.epoch = epoch + 1
            seconds = time.perf_counter() - start
            seconds_on_rank_0 = float(  # rank 0's clock for all ranks: their schedules must agree
                self.context.all_reduce_sum(torch.tensor([seconds if self.context.is_main else 0.0], dtype=torch.float64))
            )
            self.seconds_spent += seconds_on_rank_0
            if self.epoch == PLAN_EPOCH and config.max_epochs == "auto" and config.max_time is not None:
                self.epoch_speed = (self.epoch, self.seconds_spent, seconds_on_rank_0)
                self._log_plan()
            row = self._metrics_row(lr, train_loss, valid_loss, errors, seconds)
            if self.context.is_main:
                self._write_metrics(row)
                save_checkpoint(self.output / CHECKPOINT_NAME, self.checkpoint())
                self.log(self._epoch_line(row, improved))
            self.context.barrier()
            if (self.planned_epochs is None or self.epoch < self.planned_epochs) and self._out_of_time():
                self.log(f"Stopped: the {config.max_time:g}-minute budget is spent after epoch {self.epoch}; --resume "
                         "with a larger --max-time (or none) continues.")
                break
        self.log(f"Best validation loss {self.best_valid_loss:.6g}; model in {self.output / BEST_MODEL_NAME}.")
        if self.context.is_main:
            plot_metrics(self.output / METRICS_NAME, self.output)
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.context.is_main and self._refits_atomic_energies() and (self.output / BEST_MODEL_NAME).exists():
            self._refit_atomic_energies()
        test_errors = self._evaluate_test() if self.data.test is not None and self.context.is_main else None
        return {"epochs": self.epoch, "best_valid_loss": self.best_valid_loss, "test": test_errors}

    def _out_of_time(self) -> bool:
        """Whether the run's ``max_time`` budget is spent (the same on every rank)."""
        return self.config.max_time is not None and self.seconds_spent >= 60.0 * self.config.max_time

    @property
    def planned_epochs(self) -> int | None:
        """The epochs the schedule is planned on: ``max_epochs``; with ``max_epochs: auto``, DEFAULT_EPOCHS, or
        with ``max_time`` the epochs done at the end of epoch PLAN_EPOCH plus as many as the rest of the budget
        holds at that epoch's speed (None before; recomputed from the current budget on --resume)."""
        config = self.config
        if config.max_epochs != "auto":
            return config.max_epochs
        if config.max_time is None:
            return DEFAULT_EPOCHS
        if self.epoch_speed is None:
            return None
        epochs, spent, seconds = self.epoch_speed
        return epochs + max(1, int((60.0 * config.max_time - spent) / max(seconds, 1e-9)))

    def stage_two_position(self) -> float | None:
        """The schedule position (see schedule_position) from which stage two runs, or None for none:
        ``stage_two_epoch``, or with ``auto`` the last STAGE_TWO_SHARE of a plan of at least
        STAGE_TWO_MIN_EPOCHS epochs."""
        start = self.config.stage_two_epoch
        if start != "auto":
            return start
        planned = self.planned_epochs
        if planned is None or planned < STAGE_TWO_MIN_EPOCHS:
            return None
        return (1.0 - STAGE_TWO_SHARE) * planned

    def _log_plan(self) -> None:
        config, planned, stage_two = self.config, self.planned_epochs, self.stage_two_position()
        if planned is None:
            self.log(f"Schedule on the {config.max_time:g}-minute budget: the number of epochs is planned after epoch "
                     f"{PLAN_EPOCH}, on its speed.")
            return
        line = f"Schedule: {planned} epochs"
        if config.max_time is not None:
            line += (f" on the {config.max_time:g}-minute budget (warm-up, cosine and stage two advance with the time "
                     "spent, or with the epochs if those run ahead)")
        line += "; one stage." if stage_two is None else f"; stage two from epoch {math.ceil(stage_two) + 1}."
        self.log(line)

    def schedule_position(self, epoch: int) -> float:
        """Where ``epoch`` sits in the schedule, in epochs: the epoch itself, or with ``max_time``
        the share of the budget spent × the planned epochs if that is further along, so warm-up,
        cosine and stage two fit the budget however fast the epochs run."""
        planned = self.planned_epochs
        if self.config.max_time is None or planned is None:
            return float(epoch)
        fraction = min(self.seconds_spent / (60.0 * self.config.max_time), 1.0)
        return max(float(epoch), fraction * planned)

    def checkpoint(self) -> dict:
        """The state after ``self.epoch`` completed epochs (see eqcalc.train.checkpoint)."""
        return {
            "epoch": self.epoch,
            "model": model_payload(self.model),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": capture_rng_state(),
            "best_valid_loss": self.best_valid_loss,
            "epochs_without_improvement": self.epochs_without_improvement,
            "stage_two_start": self.stage_two_start,
            "epoch_speed": None if self.epoch_speed is None else list(self.epoch_speed),
            "reference_loss": self.reference_loss,
            "seconds_spent": self.seconds_spent,
            "config": self.config.to_dict(),
        }

    # ------------------------------------------------------------ outputs

    def _metrics_row(self, lr: float, train_loss: float, valid_loss: float, errors: dict, seconds: float) -> dict:
        return {
            "epoch": self.epoch,
            "lr": lr,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_e_mae_meV_atom": errors["e_mae"],
            "valid_e_rmse_meV_atom": errors["e_rmse"],
            "valid_f_mae_meV_A": errors["f_mae"],
            "valid_f_rmse_meV_A": errors["f_rmse"],
            "valid_s_mae_GPa": errors["s_mae"],
            "valid_s_rmse_GPa": errors["s_rmse"],
            "valid_mu_mae_me_A": errors["mu_mae"],
            "valid_mu_rmse_me_A": errors["mu_rmse"],
            "valid_alpha_mae_A3": errors["alpha_mae"],
            "valid_alpha_rmse_A3": errors["alpha_rmse"],
            "seconds": round(seconds, 3),
        }

    @staticmethod
    def _epoch_line(row: dict, improved: bool) -> str:
        """One log line per epoch: losses and the validation MAEs that have labels; * marks a new best."""
        line = f"epoch {row['epoch']:>4}  lr {row['lr']:.3g}  train {row['train_loss']:.5g}  valid {row['valid_loss']:.5g}"
        for key, name, unit, digits in (
            ("valid_e_mae_meV_atom", "E", "meV/atom", 3),
            ("valid_f_mae_meV_A", "F", "meV/Å", 2),
            ("valid_s_mae_GPa", "σ", "GPa", 4),
            ("valid_mu_mae_me_A", "μ", "me·Å", 2),
            ("valid_alpha_mae_A3", "α", "Å³", 4),
        ):
            if not math.isnan(row[key]):
                line += f"  {name} {row[key]:.{digits}f} {unit}"
        return line + ("  *" if improved else "")

    def _write_metrics(self, row: dict) -> None:
        append_csv_row(self.output / METRICS_NAME, METRICS_COLUMNS, row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "epoch" and not (isinstance(value, float) and math.isnan(value)):
                    self.tensorboard.add_scalar(key, value, row["epoch"])

    def _trim_metrics(self) -> None:
        """Drop metric rows of epochs after the checkpoint (written before a crash, to be redone)."""
        path = self.output / METRICS_NAME
        if not path.exists():
            return
        with path.open(newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) <= self.epoch]
        write_csv(path, METRICS_COLUMNS, rows)

    def _refits_atomic_energies(self) -> bool:
        option = self.config.refit_atomic_energies
        return option is True or (option == "auto" and self.config.atomic_energies in ("auto", "least_squares"))

    def _refit_atomic_energies(self) -> None:
        """Shift the best model's E0 by the least-squares fit of its training-set energy residuals over the
        compositions (:func:`least_squares_atomic_energies`): a force-dominated loss leaves the energy's
        constant free to drift; this takes the drift out and leaves forces and stress as they are."""
        path = self.output / BEST_MODEL_NAME
        model = load_model(path)
        structures = self.data.train.structures
        if not any(s.energy is not None for s in structures):
            return
        evaluated, _ = inference_model(model, device=self.device)
        batch_size = self.config.valid_batch_size or self.config.batch_size
        predicted = np.array([p.energy for p in predict(evaluated, self.data.train, batch_size=batch_size, device=self.device)])
        shift, _ = least_squares_atomic_energies(structures, model.species, predicted)
        labelled = [k for k, s in enumerate(structures) if s.energy is not None]
        before = float(np.mean([structures[k].energy - predicted[k] for k in labelled]))
        with torch.no_grad():
            model.element_energies.values += torch.as_tensor(shift, dtype=torch.float64)
        save_model(model, path)
        shifts = ", ".join(f"{chemical_symbols[z]} {1000 * d:+.2f}" for z, d in zip(model.species, shift))
        self.log(f"E0 re-fitted to the training set (refit_atomic_energies): shift meV {shifts}; the best model's mean "
                 f"energy error there was {-1000 * before:+.2f} meV per structure, now 0 (least squares).")

    def _evaluate_test(self) -> dict:
        model, _ = inference_model(self.output / BEST_MODEL_NAME, device=self.device)
        batch_size = self.config.valid_batch_size or self.config.batch_size
        predictions = predict(model, self.data.test, batch_size=batch_size, device=self.device)
        errors = grouped_errors(self.data.test, predictions)
        self.log("Test set (best model):\n" + format_error_table({self.config.test: errors}))
        return errors


def train(config: TrainConfig) -> dict:
    """Run a training described by ``config`` (one process, or this process's part under torchrun):
    one run, or with ``committee`` > 1 a committee (:func:`eqcalc.train.committee.train_committee`)."""
    from .committee import check_single_run_output, train_committee

    if config.committee > 1:
        return train_committee(config)
    check_single_run_output(Path(config.output))
    return Trainer(config).fit()
