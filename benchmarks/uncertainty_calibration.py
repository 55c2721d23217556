"""Does the uncertainty track the error? A committee and the one-model LLPR on rMD17 ethanol,
inside and outside the training data.

The extrapolation is made from the DFT data themselves: the models train only on the
lower-energy half of the rMD17 ethanol training file (``--train-count`` frames from it, 50 more
for validation), and are tested on the lower-energy half of the test file (in distribution) and
on its highest-energy tenth (distorted geometries the training never saw). A committee of
``--members`` PaiNN models is trained with ``eqcalc train --committee``; member 0 gets an LLPR
fitted on its training frames and calibrated on its validation frames (``eqcalc calibrate``).

Per test structure: the observed force error of the prediction (committee mean, or member 0),
RMS over atoms of |ΔF_i|, against the predicted one, RMS over atoms of ``forces_std_i``. Reported:
the Spearman rank correlation of predicted and observed (per set and pooled), the mean of each per
set, the ratio extrapolation / in distribution of each, and calibration curves (observed against
predicted, in quantile bins) in benchmarks/results/uncertainty_calibration.png. The committee's
raw spread and its spread rescaled by one factor fitted on the validation frames are both shown.
Writes benchmarks/results/uncertainty_calibration.md.

    OMP_NUM_THREADS=1 flock /tmp/eqcalc-timing.lock .venv/bin/python benchmarks/uncertainty_calibration.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import ase.io
import numpy as np
from scipy.stats import spearmanr

from common import header, markdown_table

import eqcalc
from eqcalc import plotting
from eqcalc.cli import main as eqcalc_main

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "rmd17"


def split_by_energy(seed: int, train_count: int, valid_count: int, work: Path) -> dict[str, Path]:
    """Training pool: the lower-energy half of the training file; test sets from the test file."""
    rng = np.random.default_rng(seed)
    train = ase.io.read(DATA / "ethanol_train.extxyz", ":")
    test = ase.io.read(DATA / "ethanol_test.extxyz", ":")
    energies = np.array([a.get_potential_energy() for a in train])
    pool = np.flatnonzero(energies <= np.median(energies))
    chosen = rng.choice(pool, train_count + valid_count, replace=False)
    test_energies = np.array([a.get_potential_energy() for a in test])
    low = np.flatnonzero(test_energies <= np.median(test_energies))
    high = np.flatnonzero(test_energies >= np.quantile(test_energies, 0.9))
    files = {"train": [train[i] for i in chosen[:train_count]], "valid": [train[i] for i in chosen[train_count:]],
             "in distribution": [test[i] for i in rng.choice(low, min(len(low), 100), replace=False)],
             "extrapolation": [test[i] for i in high]}
    paths = {}
    for name, frames in files.items():
        paths[name] = work / f"{name.replace(' ', '_')}.extxyz"
        ase.io.write(paths[name], frames)
    return paths


def errors(calc, frames) -> tuple[np.ndarray, np.ndarray]:
    """(observed, predicted) per structure: RMS over atoms of |ΔF_i| and of forces_std_i, eV/Å."""
    observed, predicted = [], []
    for atoms in frames:
        reference = atoms.get_forces()
        probe = atoms.copy()
        probe.calc = calc
        observed.append(np.sqrt(((probe.get_forces() - reference) ** 2).sum(1).mean()))
        predicted.append(np.sqrt((calc.results["forces_std"] ** 2).mean()))
    return np.array(observed), np.array(predicted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--train-count", type=int, default=200)
    parser.add_argument("--valid-count", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/eqcalc_uncertainty_calibration")
    parser.add_argument("--out", default=str(HERE / "results" / "uncertainty_calibration.md"))
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    paths = split_by_energy(args.seed, args.train_count, args.valid_count, work)
    committee = work / "committee"
    code = eqcalc_main([
        "train", "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--model", "painn",
        "--cutoff", "5.0", "--hyper", json.dumps({"num_features": 32, "num_interactions": 3}),
        "--max-epochs", str(args.epochs), "--batch-size", "5", "--lr", "1e-3", "--forces-weight", "100",
        "--seed", str(args.seed), "--committee", str(args.members), "--output", str(committee),
    ])
    if code:
        return code
    llpr_file = work / "member0_llpr.pt"
    code = eqcalc_main(["calibrate", str(committee / "member_0" / "best_model.pt"), "--train", str(paths["train"]),
                        "--valid", str(paths["valid"]), "-o", str(llpr_file)])
    if code:
        return code
    valid = ase.io.read(paths["valid"], ":")
    committee_calc = eqcalc.EquivariantCalculator(str(committee))
    observed, predicted = errors(committee_calc, valid)
    rescale = float(np.sqrt(np.mean(observed ** 2) / np.mean(predicted ** 2)))  # one factor, fitted on validation
    methods = {f"committee of {args.members}": (committee_calc, 1.0),
               f"committee of {args.members}, rescaled x{rescale:.2f}": (committee_calc, rescale),
               "one model + LLPR": (eqcalc.EquivariantCalculator(str(llpr_file)), 1.0)}
    sets = {name: ase.io.read(paths[name], ":") for name in ("in distribution", "extrapolation")}
    measured = {}
    for method, (calc, factor) in methods.items():
        for name, frames in sets.items():
            seen, guessed = errors(calc, frames)
            measured[method, name] = (seen, factor * guessed)
    rows = []
    for method in methods:
        pooled = [np.concatenate([measured[method, name][k] for name in sets]) for k in (0, 1)]
        means = {name: [1e3 * float(np.mean(measured[method, name][k])) for k in (0, 1)] for name in sets}
        for name in sets:
            seen, guessed = measured[method, name]
            rows.append([method, name, f"{means[name][0]:.1f}", f"{means[name][1]:.1f}",
                         f"{spearmanr(guessed, seen).statistic:.2f}"])
        rows.append([method, "both (pooled)", "", "", f"{spearmanr(pooled[1], pooled[0]).statistic:.2f}"])
        rows.append([method, "extrapolation / in distribution",
                     f"{means['extrapolation'][0] / means['in distribution'][0]:.2f}x",
                     f"{means['extrapolation'][1] / means['in distribution'][1]:.2f}x", ""])
    figure = None
    if plotting.available():
        figure = Path(args.out).with_suffix(".png")
        fig = plotting.new_figure(figsize=(4.2 * len(methods), 4.0))
        for ax, method in zip(fig.subplots(1, len(methods)), methods):
            top = 0.0
            for name, marker in zip(sets, "os"):
                seen, guessed = (1e3 * x for x in measured[method, name])
                ax.scatter(guessed, seen, s=8, marker=marker, alpha=0.5, label=name)
                top = max(top, seen.max(), guessed.max())
            seen, guessed = (1e3 * np.concatenate([measured[method, name][k] for name in sets]) for k in (0, 1))
            edges = np.quantile(guessed, np.linspace(0, 1, 9))
            which = np.clip(np.searchsorted(edges, guessed, side="right") - 1, 0, 7)
            bins = [(guessed[which == b].mean(), np.sqrt((seen[which == b] ** 2).mean())) for b in range(8) if (which == b).any()]
            ax.plot(*zip(*bins), "k-o", ms=3, label="binned (RMS)")
            ax.plot([0, top], [0, top], "k:", lw=0.8)
            ax.set_xlabel("predicted force error (meV/Å)")
            ax.set_ylabel("observed force error (meV/Å)")
            ax.set_title(method, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(figure, dpi=120)
    table = markdown_table(["uncertainty", "test set", "observed error meV/Å", "predicted meV/Å", "Spearman ρ"], rows)
    text = "\n".join([
        "# Uncertainty against error: rMD17 ethanol, inside and outside the training data", "", "```", header(),
        f"PaiNN 32 features, 3 interactions, r_c 5 Å; {args.train_count} training + {args.valid_count} validation "
        f"frames from the lower-energy half of the rMD17 ethanol training file; {args.epochs} epochs; seed {args.seed}",
        "```", "",
        "Per test structure, observed = RMS over atoms of |F_pred − F_DFT|, predicted = RMS over atoms of "
        "forces_std (both eV/Å vectors per atom, shown in meV/Å); in distribution: 100 frames of the lower-energy "
        "half of the test file; extrapolation: the highest-energy tenth of the test file. The rescaled committee "
        "uses one factor that makes predicted and observed RMS equal on the validation frames. Spearman ρ: rank "
        "correlation of predicted and observed over the structures of the set."
        + (f" Calibration plot: `{figure.name}`." if figure else ""),
        "", table, "",
    ])
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
