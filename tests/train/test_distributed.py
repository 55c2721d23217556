"""Two processes under torchrun (gloo, CPU) take the same steps as one process on the whole batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import pytest
import torch

from eqcalc.data.labels import collate
from eqcalc.train.config import load_config
from eqcalc.train.trainer import Trainer

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def options(tmp_path, ethanol_file):
    frames = ase.io.read(ethanol_file, ":20")
    for atoms in frames[::3]:  # unequal label counts per process: the loss must use global counts
        atoms.calc.results.pop("energy")
    train = tmp_path / "train.extxyz"
    ase.io.write(train, frames)
    return {
        "train": str(train), "valid_count": 4, "batch_size": 3, "max_epochs": 2, "progress": False, "seed": 5,
        "device": "cpu", "lr": 5e-3, "output": str(tmp_path / "ddp"), "dtype": "float64",
        "model": {"family": "schnet", "cutoff": 3.0, "hyper": {"num_features": 8, "num_interactions": 1, "num_basis": 8}},
    }


def test_two_processes_match_one_process_on_the_full_batch(tmp_path, options):
    torchrun(str(WORKER), str(tmp_path), json.dumps(options), cwd=tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for name, value in ranks[0]["parameters"].items():  # identical steps on every process
        assert torch.equal(ranks[1]["parameters"][name], value), name
    assert not set(ranks[0]["indices"]) & set(ranks[1]["indices"])

    single = Trainer(load_config(overrides={**options, "output": str(tmp_path / "single")}), log=lambda m: None)
    union = ranks[0]["indices"] + ranks[1]["indices"]
    single.compute_gradients(*collate([single.data.train[i] for i in union]))
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(ranks[0]["gradients"][name], p.grad, rtol=1e-10, atol=1e-13)
    output = Path(options["output"])
    assert {p.name for p in output.iterdir()} == {  # written once, by rank 0
        "checkpoint.pt", "best_model.pt", "metrics.csv", "train.log", "config.yaml", "splits.json", "training.png"}
    assert len((output / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.slow
def test_torchrun_cli(tmp_path, options):
    result = torchrun("-m", "eqcalc.cli", "train", "--train", options["train"], "--max-epochs", "1", "--output",
                      str(tmp_path / "cli"), "--cutoff", "3", "--hyper", "{num_features: 8, num_interactions: 1}",
                      "--no-progress", "--device", "cpu", cwd=tmp_path)
    assert result.stdout.count("epoch    1") == 1  # rank 0 alone reports
    assert (tmp_path / "cli" / "best_model.pt").exists()
