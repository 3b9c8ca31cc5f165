"""Every ``>>>`` example in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import numgrad

# Subpackages too (tracking, sweep, plots). Not the model-from-code file: MLflow runs it
# when it loads a model, and it registers the model as it is imported.
NOT_IMPORTED = {"numgrad.tracking.simplenet_pyfunc"}
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(numgrad.__path__, "numgrad.")
    if m.name not in NOT_IMPORTED
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0


def test_core_modules_have_examples():
    for name in ("functions", "gradient", "net", "descent", "data", "config"):
        module = importlib.import_module(f"numgrad.{name}")
        assert doctest.testmod(module).attempted > 0, name
