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


def random_split(
    items: Sequence[T], *, fraction: float | None = None, count: int | None = None, seed: int = 0
) -> tuple[list[T], list[T]]:
    """(kept, held_out): a seeded random choice of ``count`` items (or a ``fraction``) held out.

    The kept items keep their original order.
    """
    held = split_count(len(items), fraction, count)
    order = np.random.default_rng(seed).permutation(len(items))
    held_out = set(order[:held].tolist())
    kept = [item for i, item in enumerate(items) if i not in held_out]
    return kept, [items[i] for i in sorted(held_out)]
