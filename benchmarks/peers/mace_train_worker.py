"""Times training epochs of mace-torch's own training code; runs in benchmarks/peers/.venv/mace (or any
interpreter with mace-torch and e3nn 0.4.4 on its path), started by train_epoch.py.

``--config`` (JSON): ``frames`` (extxyz with REF_energy / REF_forces / REF_stress: the training
frames of the case, the same ones eqcalc trains on), ``batch_size``, ``lr``, ``cutoff``,
``energy_weight``, ``forces_weight``, ``stress_weight``, ``stress`` (bool: fit the stress), and
``model`` (mace_worker.py's keys, without avg_num_neighbors).

As ``mace_run_train`` does it: its argument parser gives every setting not named here its default
(``--optimizer adam`` with AMSGrad, ``--weight_decay 0``, ``--loss weighted`` or ``stress``,
``pin_memory``, ``num_workers``); ``mace.data.load_from_xyz`` reads the frames,
``AtomicData.from_config`` builds each graph once, ``mace.tools.torch_geometric`` 's DataLoader
batches them (shuffle, drop_last, seeded generator); avg_num_neighbors from
``modules.compute_avg_num_neighbors`` of that loader; the model is mace_worker.py's
ScaleShiftMACE (residual interaction blocks); the loss ``get_loss_fn`` (WeightedEnergyForcesLoss /
WeightedEnergyForcesStressLoss), the optimiser ``get_params_options`` + ``get_optimizer``; an epoch
is ``mace.tools.train.train_one_epoch`` (``take_step`` per batch: to device, forward with
forces (+ stress), loss, backward, step; a metrics line per step to a MetricsLogger file), no EMA,
no gradient clipping.
"""

from __future__ import annotations

import os
from itertools import islice

import torch
from mace import data, modules, tools  # before e3nn: mace sets the flag e3nn 0.4.4 needs on torch ≥ 2.6
from mace.tools import torch_geometric
from mace.tools.scripts_utils import get_loss_fn, get_optimizer, get_params_options
from mace.tools.train import take_step, train_one_epoch
from mace_worker import build_model
from train_timing import parse_arguments, serve, versions


def main() -> None:
    args = parse_arguments(__doc__)
    case = args.config
    stress = bool(case["stress"])
    mace_args = tools.build_default_arg_parser().parse_args([
        "--name", "train_epoch", "--train_file", case["frames"], "--seed", str(args.seed),
        "--device", args.device, "--default_dtype", args.dtype, "--r_max", str(case["cutoff"]),
        "--batch_size", str(case["batch_size"]), "--lr", str(case["lr"]), "--optimizer", "adam",
        "--weight_decay", "0", "--loss", "stress" if stress else "weighted",
        "--energy_weight", str(case["energy_weight"]), "--forces_weight", str(case["forces_weight"]),
        "--stress_weight", str(case["stress_weight"]),
    ])  # fmt: skip
    tools.set_seeds(args.seed)
    tools.set_default_dtype(args.dtype)
    device = tools.init_device(args.device)
    _, configs = data.load_from_xyz(case["frames"], key_specification=data.KeySpecification.from_defaults())
    species = sorted({int(z) for config in configs for z in config.atomic_numbers})
    z_table = tools.AtomicNumberTable(species)
    dataset = [data.AtomicData.from_config(c, z_table=z_table, cutoff=mace_args.r_max, heads=["Default"]) for c in configs]
    loader = torch_geometric.dataloader.DataLoader(
        dataset=dataset,
        batch_size=mace_args.batch_size,
        shuffle=True,
        drop_last=True,  # mace_run_train's, without LBFGS
        pin_memory=mace_args.pin_memory,
        num_workers=mace_args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    avg_num_neighbors = modules.compute_avg_num_neighbors(loader)
    model = build_model({**case["model"], "avg_num_neighbors": avg_num_neighbors}, species, mace_args.r_max)
    model.to(device)
    loss_fn = get_loss_fn(mace_args, dipole_only=False, compute_dipole=False)
    optimizer = get_optimizer(mace_args, get_params_options(mace_args, model))
    output_args = {"energy": True, "forces": True, "virials": False, "stress": stress}
    logger = tools.MetricsLogger(directory=os.path.join(args.workdir, "results"), tag="train_epoch_train")
    step = dict(model=model, loss_fn=loss_fn, optimizer=optimizer, ema=None, output_args=output_args,
                max_grad_norm=None, device=device)  # fmt: skip
    warm = 0
    while warm < args.warmup:
        for batch in islice(loader, args.warmup - warm):
            take_step(batch=batch, **step)
            warm += 1

    def run_epoch(epoch: int) -> tuple[int, int]:
        train_one_epoch(data_loader=loader, epoch=epoch, logger=logger, distributed=False, **step)
        return len(loader), len(loader) * mace_args.batch_size

    serve(
        run_epoch,
        device,
        {
            "num_params": sum(p.numel() for p in model.parameters()),
            "batches": len(loader),
            "frames": len(loader) * mace_args.batch_size,
            "versions": versions("mace-torch"),
            "path": "eager",
            "notes": f"mace.tools.train.train_one_epoch; {type(optimizer).__name__} (amsgrad {mace_args.amsgrad}), "
            f"{type(loss_fn).__name__}, avg_num_neighbors {avg_num_neighbors:.3f}",
        },
    )


if __name__ == "__main__":
    main()
