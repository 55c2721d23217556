"""Does picking frames by uncertainty beat picking them at random? ``eqcalc learn`` on ethanol with
GFN2-xTB as the reference, repeated over seeds.

Every run is ``configs/learn_ethanol_xtb.yaml`` (20 starting frames, committees of 3 PaiNN
models, 1 ps of Langevin MD per round, 10 frames labelled per round) with these changes:

- ``md.temperature``: ``--temperature`` (the rMD17 test frames come from MD at 500 K);
- the seed (``--seeds``): the loop's ``seed`` (MD and random selection) and ``train.seed``;
- the strategy (``--strategies``):
  ``uncertainty`` (the most uncertain and distinct trajectory frames),
  ``window`` (the same, among frames whose largest force spread is ≤ ``--max-uncertainty``),
  ``random`` (as many frames drawn at random from the same trajectory).

Each run is an ordinary, resumable ``eqcalc learn`` folder under ``--output``, so an interrupted
benchmark continues where it stopped when run again with the same arguments. Reported per
strategy and round, mean and standard deviation over the seeds: test force and energy MAE on the
200 xTB-labelled rMD17 frames and the stable MD time. Writes ``benchmarks/results/learn_selection.md``,
``.csv`` and ``.png``.

    pip install "eqcalc[xtb]"
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/make_learn_ethanol_data.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learn_selection.py
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import yaml

from common import header, markdown_table

from eqcalc import plotting
from eqcalc.learn import LearnConfig, learn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = ROOT / "configs" / "learn_ethanol_xtb.yaml"
RESULTS = HERE / "results"
METRICS = ("test_f_mae_meV_A", "test_e_mae_meV_atom", "stable_md_time_fs")


def run_settings(base: dict, strategy: str, seed: int, args: argparse.Namespace) -> dict:
    """The learn settings of one run (see the module docstring)."""
    values = {**base, "seed": seed, "rounds": args.rounds}
    values["output"] = str(args.output / f"{strategy}_T{args.temperature:g}_seed{seed}")
    values["train"] = {**base["train"], "seed": seed}
    values["md"] = {**base["md"], "temperature": args.temperature}
    values["select"] = dict(base.get("select", {}))
    values["selection"] = "random" if strategy == "random" else "uncertainty"
    if strategy == "window":
        values["select"]["max_uncertainty"] = args.max_uncertainty
    return values


def summarise(rows: list[dict]) -> list[dict]:
    """Per (strategy, round): mean and standard deviation over seeds of each metric."""
    summary = []
    for key in sorted({(r["strategy"], r["round"]) for r in rows}, key=lambda k: (k[0], k[1])):
        group = [r for r in rows if (r["strategy"], r["round"]) == key]
        entry = {"strategy": key[0], "round": key[1], "runs": len(group),
                 "n_train": int(np.mean([r["n_train"] for r in group]))}
        for name in METRICS:
            values = np.array([r[name] for r in group], dtype=float)
            entry[name] = values.mean()
            entry[name + "_std"] = values.std(ddof=1) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def plot(summary: list[dict], path: Path) -> Path | None:
    figure = plotting.new_figure(figsize=(11, 3.6))
    if figure is None:
        return None
    axes = figure.subplots(1, 3)
    labels = {"test_f_mae_meV_A": "test force MAE (meV/Å)", "test_e_mae_meV_atom": "test energy MAE (meV/atom)",
              "stable_md_time_fs": "stable MD time (fs)"}
    for axis, name in zip(axes, METRICS):
        for strategy in sorted({s["strategy"] for s in summary}):
            points = [s for s in summary if s["strategy"] == strategy]
            axis.errorbar([p["n_train"] for p in points], [p[name] for p in points],
                          yerr=[p[name + "_std"] for p in points], marker="o", capsize=3, label=strategy)
        axis.set_xlabel("training frames")
        axis.set_ylabel(labels[name])
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["uncertainty", "window", "random"],
                        choices=["uncertainty", "window", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--temperature", type=float, default=500.0, help="MD temperature, K")
    parser.add_argument("--max-uncertainty", type=float, default=1.0, help="upper spread bound of 'window', eV/Å")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "learn_selection")
    parser.add_argument("--results", type=Path, default=RESULTS / "learn_selection")
    args = parser.parse_args()

    base = yaml.safe_load(BASE.read_text())
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            settings = run_settings(base, strategy, seed, args)
            print(f"== {strategy}, seed {seed}: {settings['output']}", flush=True)
            result = learn(LearnConfig.from_dict(settings, source=f"{BASE.name} ({strategy}, seed {seed})"),
                           log=lambda message: print(message, flush=True))
            rows += [{"strategy": strategy, "seed": seed, **row} for row in result.rounds]

    summary = summarise(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".csv").write_text(buffer.getvalue())
    table = markdown_table(
        ["strategy", "round", "training frames", "test F MAE meV/Å", "test E MAE meV/atom", "stable MD fs"],
        [[s["strategy"], s["round"], s["n_train"],
          *(f"{s[name]:.1f} ± {s[name + '_std']:.1f}" for name in METRICS)] for s in summary])
    picture = plot(summary, args.results.with_suffix(".png"))
    text = "\n".join([
        "# Active learning: uncertainty against random selection (eqcalc learn, ethanol, GFN2-xTB)", "",
        "```", header(), "```", "",
        f"Base config {BASE.relative_to(ROOT)}; MD at {args.temperature:g} K; seeds {args.seeds}; "
        f"window: largest force spread ≤ {args.max_uncertainty:g} eV/Å. Mean ± standard deviation over the seeds "
        "(test set: 200 xTB-labelled rMD17 ethanol frames).", "",
        table, "",
        f"Per run: {args.results.with_suffix('.csv').name}" + (f"; plot: {picture.name}" if picture else "") + ".", ""])
    args.results.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
