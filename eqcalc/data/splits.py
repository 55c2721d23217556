"""Seeded random split of one data set into two parts."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def split_count(total: int, fraction: float | None = None, count: int | None = None) -> int:
    """Size of the held-out part: ``count`` if given, else round(fraction · total), at least 1 if fraction > 0."""
    if count is not None:
        if not 0 <= count < total:
            raise ValueError(f"Cannot hold out {count} of {total} structures; choose a count in 0..{total - 1}.")
        return int(count)
    fraction = 0.0 if fraction is None else float(fraction)
    if not 0 <= fraction < 1:
        raise ValueError(f"The held-out fraction must be in [0, 1), got {fraction}.")
    held = int(round(fraction * total))
    held = max(held, 1) if fraction > 0 else 0
    if held >= total:
        raise ValueError(f"Holding out a fraction {fraction} of {total} structures leaves none to train on.")
    return held


def random_split_indices(
    total: int, *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(kept, held_out) indices into ``total`` items, each part sorted: a seeded random choice of
    ``count`` items (or a ``fraction``) held out.

    Examples:
        >>> random_split_indices(10, count=3, seed=0)
        ([0, 1, 3, 5, 7, 8, 9], [2, 4, 6])
    """
    held = split_count(total, fraction, count)
    held_out = sorted(np.random.default_rng(seed).permutation(total)[:held].tolist())
    chosen = set(held_out)
    return [i for i in range(total) if i not in chosen], held_out


def random_split(
    items: Sequence[T], *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> tuple[list[T], list[T]]:
    """(kept, held_out) items of :func:`random_split_indices`; the kept items keep their order."""
    kept, held_out = random_split_indices(len(items), fraction=fraction, count=count, seed=seed)
    return [items[i] for i in kept], [items[i] for i in held_out]
