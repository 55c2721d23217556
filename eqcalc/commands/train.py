"""``eqcalc train [CONFIG.yaml] [--option VALUE ...]``: train a model (also under torchrun)."""

from __future__ import annotations

import argparse

HELP = "train a model on labelled structures (YAML config and/or flags; multi-process with torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import add_config_arguments

    parser.epilog = (
        "Examples: eqcalc train --train data.extxyz --max-time 30 --output runs/x (the defaults: MACE 32x, the "
        "project's recipe, docs/training.md); eqcalc train --train data.extxyz --model painn --max-epochs 50; "
        "eqcalc train config.yaml --lr 5e-4; eqcalc train config.yaml --committee 4 --output runs/committee "
        "(a committee: EquivariantCalculator('runs/committee')); torchrun --nproc_per_node=2 -m eqcalc.cli train config.yaml"
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..train.config import config_from_args
    from ..train.distributed import shutdown_distributed
    from ..train.trainer import train

    config = config_from_args(args)
    try:
        train(config)
    except FloatingPointError as err:  # diverged training: report it like any other bad input
        raise ValueError(str(err)) from err
    finally:
        shutdown_distributed()
    return 0
