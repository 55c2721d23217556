"""Replay: mix frames of the original training data into every epoch of a fine-tuning run.

Each epoch visits every new training frame once plus ``round(replay_fraction · N_train)`` frames
drawn without replacement from the replay set (at most all of them), a fresh seeded draw per
epoch, shuffled together. Indices ≥ N_train address the replay set in
``ConcatDataset([train, replay])``.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


def replay_count(num_train: int, num_replay: int, fraction: float) -> int:
    """Replay frames per epoch: round(fraction · num_train), at most num_replay."""
    return min(num_replay, int(round(fraction * num_train)))


class ReplaySampler(Sampler[int]):
    """Indices of one epoch (this process's share under torchrun), deterministic in (seed, epoch).

    Args:
        num_train: new training frames (indices 0..num_train-1).
        num_replay: replay frames (indices num_train..num_train+num_replay-1).
        fraction: replay frames per epoch as a fraction of num_train.
        num_replicas, rank: process placement; each process gets every num_replicas-th index of the
            epoch's list, padded by repetition to a multiple of num_replicas (as DistributedSampler).
    """

    def __init__(self, num_train: int, num_replay: int, fraction: float, seed: int, num_replicas: int = 1, rank: int = 0):
        self.num_train, self.num_replay = num_train, num_replay
        self.count = replay_count(num_train, num_replay, fraction)
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0
        self.per_replica = math.ceil((num_train + self.count) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_indices(self) -> list[int]:
        """All processes' indices of this epoch, before sharding."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        replay = torch.randperm(self.num_replay, generator=generator)[: self.count] + self.num_train
        indices = torch.cat([torch.arange(self.num_train), replay])
        indices = indices[torch.randperm(len(indices), generator=generator)].tolist()
        total = self.per_replica * self.num_replicas
        return (indices * math.ceil(total / len(indices)))[:total] if indices else indices

    def __iter__(self):
        return iter(self.epoch_indices()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return self.per_replica
