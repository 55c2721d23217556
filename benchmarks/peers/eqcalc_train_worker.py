"""Times training epochs of eqcalc's own Trainer; runs in eqcalc's venv (/work/main/.venv), started by
train_epoch.py.

``--config`` is a TrainConfig dict (what ``eqcalc train`` reads from YAML); the worker adds the
dtype, device, seed and a scratch output folder, builds ``eqcalc.train.Trainer`` (its data loading,
statistics, model, AdamW, DataLoader with ``collate``) and times ``Trainer.train_epoch``: every
batch of the epoch drawn from its DataLoader (batching the graphs built at loading), moved to the
device, energy + forces (+ stress) loss, backward, optimiser step. On CPU the model trains on
eqcalc's kernels when the config asks for them (``kernels: true``, the default); on CUDA the
Trainer keeps the torch path (the kernels are CPU-only).
"""

from __future__ import annotations

import sys
from itertools import islice

from train_timing import parse_arguments, serve, versions

from eqcalc.train.config import TrainConfig
from eqcalc.train.trainer import Trainer


def main() -> None:
    args = parse_arguments(__doc__)
    options = dict(args.config, dtype=args.dtype, device=args.device, seed=args.seed, output=args.workdir,
                   overwrite=True, progress=False)
    config = TrainConfig.from_dict(options, "train_epoch.py case")
    trainer = Trainer(config, log=lambda message: print(message, file=sys.stderr, flush=True))
    kernels = trainer.model.set_kernels(config.kernels and trainer.device.type == "cpu")  # as the Trainer set it
    warm = 0
    while warm < args.warmup:  # untimed steps, through the same loader and train_step as an epoch
        for graph, labels in islice(trainer.train_loader, args.warmup - warm):
            trainer.train_step(graph, labels)
            warm += 1

    def run_epoch(epoch: int) -> tuple[int, int]:
        trainer.train_epoch(epoch)
        return len(trainer.train_loader), len(trainer.train_sampler)

    serve(
        run_epoch,
        trainer.device,
        {
            "num_params": sum(p.numel() for p in trainer.model.parameters()),
            "batches": len(trainer.train_loader),
            "frames": len(trainer.train_sampler),
            "versions": versions("eqcalc", "matscipy"),
            "path": "CPU kernels" if kernels else "torch path",
            "notes": f"eqcalc.train.Trainer.train_epoch; AdamW (weight decay {config.weight_decay:g}, "
            f"amsgrad {config.amsgrad}), clip {config.clip_grad_norm}, EMA {config.ema_decay}",
        },
    )


if __name__ == "__main__":
    main()
