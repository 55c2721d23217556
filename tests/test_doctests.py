"""The examples in the API reference's docstrings run (docs/api.md renders them)."""

import doctest
import importlib

import pytest

MODULES = ["eqcalc.inference", "eqcalc.data.splits", "eqcalc.selection"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0
