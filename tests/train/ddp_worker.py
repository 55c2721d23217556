"""Run by ``torchrun --nproc_per_node=2`` from test_distributed.py (not a test itself).

Each process computes the averaged gradient of its first batch, trains for the configured
epochs, and saves its batch indices, gradients and final parameters to OUT/rank<r>.pt.

Usage: ddp_worker.py OUT CONFIG_JSON
"""

import json
import sys
from pathlib import Path

import torch

from eqcalc.data.labels import collate
from eqcalc.train.config import load_config
from eqcalc.train.distributed import shutdown_distributed
from eqcalc.train.trainer import Trainer


def main() -> None:
    out, options = Path(sys.argv[1]), json.loads(sys.argv[2])
    trainer = Trainer(load_config(overrides=options), log=lambda message: None)
    trainer.train_sampler.set_epoch(0)
    indices = list(trainer.train_sampler)[: trainer.config.batch_size]
    trainer.compute_gradients(*collate([trainer.data.train[i] for i in indices]))
    gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters()}
    trainer.fit()
    parameters = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    torch.save(
        {"indices": indices, "gradients": gradients, "parameters": parameters, "world_size": trainer.context.world_size},
        out / f"rank{trainer.context.rank}.pt",
    )
    shutdown_distributed()


if __name__ == "__main__":
    main()
