"""``eqcalc learn CONFIG [--overwrite]``: the active-learning loop (a thin layer over eqcalc.learn)."""

from __future__ import annotations

import argparse

HELP = ("active learning: train a committee, run MD, pick uncertain frames, label them with a reference ASE "
        "calculator, retrain; for R rounds, resumable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Rerun the same command to continue an interrupted run (a changed setting is refused, except rounds, "
        "which may grow). Example: configs/learn_ethanol_xtb.yaml; output layout in docs/uncertainty.md."
    )
    parser.add_argument("config", help="YAML settings: output, initial_data, test_data, reference, rounds, committee, "
                        "train, md, max_force_uncertainty, select, selection, seed")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier run in the output folder and "
                        "start again")


def run(args: argparse.Namespace) -> int:
    from ..learn import learn, load_learn_config

    config = load_learn_config(args.config)
    result = learn(config, overwrite=args.overwrite)
    print(f"Wrote {result.metrics} ({len(result.rounds)} rounds).")
    return 0
