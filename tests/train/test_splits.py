"""Seeded train/validation split of one file."""

import pytest

from eqcalc.data.splits import random_split


def test_split_is_disjoint_complete_seeded_and_order_preserving():
    items = list(range(100))
    kept, held = random_split(items, fraction=0.1, seed=7)
    assert len(held) == 10 and sorted(kept + held) == items
    assert kept == sorted(kept) and held == sorted(held)
    assert random_split(items, fraction=0.1, seed=7) == (kept, held)
    assert random_split(items, fraction=0.1, seed=8)[1] != held
    assert len(random_split(items, count=50, fraction=0.1, seed=0)[1]) == 50  # count wins
    assert random_split(items, fraction=0.001, seed=0)[1] != []  # a positive fraction holds out at least one


@pytest.mark.parametrize("kwargs, message", [({"count": 100}, "Cannot hold out 100 of 100"), ({"fraction": 1.0}, r"\[0, 1\)")])
def test_impossible_splits_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_split(list(range(100)), **kwargs)
