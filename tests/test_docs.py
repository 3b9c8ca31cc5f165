"""Every ``>>>`` example in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import numgrad

MODULES = sorted(m.name for m in pkgutil.iter_modules(numgrad.__path__, "numgrad."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0


def test_core_modules_have_examples():
    for name in ("functions", "gradient", "net", "descent", "data", "config"):
        module = importlib.import_module(f"numgrad.{name}")
        assert doctest.testmod(module).attempted > 0, name
