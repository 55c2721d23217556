"""``eqcalc eval MODEL DATA...``: errors per file and config_type, parity plots, predictions."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate a model on labelled data: E/F/stress MAE, RMSE and mean signed error per file and config_type"
PREDICTION_KEYS = {"energy": "eqcalc_energy", "forces": "eqcalc_forces", "stress": "eqcalc_stress"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (best_model.pt from eqcalc train)")
    parser.add_argument("data", nargs="+", help="labelled data files (extxyz, ASE .db, eqcalc .h5, …)")
    parser.add_argument("--energy-key", help="info key of the reference energy")
    parser.add_argument("--forces-key", help="per-atom array of the reference forces")
    parser.add_argument("--stress-key", help="info key of the reference stress")
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="evaluate in this precision")
    parser.add_argument("--plots", metavar="DIR", help="write a parity plot DIR/<data file stem>_parity.png per file")
    parser.add_argument(
        "--predictions", metavar="OUT.extxyz",
        help="write every structure with its reference labels and the predictions "
        f"(info/arrays {', '.join(PREDICTION_KEYS.values())})",
    )


def prediction_frames(structures, predictions, source: str):
    """ASE frames: reference labels as usual, predictions under the eqcalc_* keys."""
    frames = []
    for structure, prediction in zip(structures, predictions):
        atoms = structure.to_atoms()
        atoms.info["source"] = source
        atoms.info[PREDICTION_KEYS["energy"]] = prediction.energy
        atoms.arrays[PREDICTION_KEYS["forces"]] = prediction.forces
        if prediction.stress is not None:
            atoms.info[PREDICTION_KEYS["stress"]] = prediction.stress.reshape(-1)
        frames.append(atoms)
    return frames


def check_finite(predictions, source: str) -> None:
    """FloatingPointError naming the structures whose predicted energy, forces or stress is NaN or inf."""
    import numpy as np

    bad = [
        index for index, p in enumerate(predictions)
        if not (np.isfinite(p.energy) and np.isfinite(p.forces).all() and (p.stress is None or np.isfinite(p.stress).all()))
    ]
    if bad:
        raise FloatingPointError(
            f"{source}: the model predicts non-finite values (NaN or inf) for {len(bad)} of {len(predictions)} "
            f"structures (first: index {bad[0]}); the model file is damaged or its training diverged."
        )


def run(args: argparse.Namespace) -> int:
    import ase.io

    from ..data.dataset import GraphDataset
    from ..data.readers import LabelKeys, read_structures
    from ..data.validation import check_species
    from .. import plotting
    from ..inference import inference_model
    from ..train.evaluate import format_error_table, grouped_errors, predict
    from ..train.parity import write_parity_plot

    if args.batch_size < 1:
        raise ValueError("--batch-size must be ≥ 1.")
    if args.plots and not plotting.available():
        raise ValueError(f"--plots needs matplotlib: {plotting.INSTALL_HINT}, or leave out --plots.")
    model, _ = inference_model(args.model, device=args.device, dtype=args.dtype)  # the calculator's kernels too
    keys = LabelKeys(args.energy_key, args.forces_key, args.stress_key)
    results, frames = {}, []
    for path in args.data:
        structures = read_structures(path, keys)
        for structure in structures:
            try:
                check_species(structure.numbers, model.species)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        dataset = GraphDataset(structures, model.cutoff, path)
        predictions = predict(model, dataset, batch_size=args.batch_size, device=args.device)
        check_finite(predictions, path)
        results[path] = grouped_errors(dataset, predictions)
        if args.plots:
            write_parity_plot(Path(args.plots) / f"{Path(path).stem}_parity.png", structures, predictions, title=path)
        if args.predictions:
            frames.extend(prediction_frames(structures, predictions, path))
    print(format_error_table(results))
    if args.predictions:
        ase.io.write(args.predictions, frames, format="extxyz")
    return 0
