"""``data=digits``: scikit-learn's 8×8 handwritten digits (1,797 samples, 64 pixels, 10 classes).

The set ships inside scikit-learn (which MLflow installs), so nothing is downloaded.
Pixels are 0..16 ink levels; divided by 16 they lie in [0, 1], as the book scales
MNIST's 0..255 (``normalize=True``). A real data set for the book's numerical
gradients: 640 weights, 1,438 training samples at the default 20% held out.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.data.base import DataConfig, Sizes
from numgrad.errors import ConfigError

NAME = "digits"
SAMPLES, FEATURES = 1797, 64
INK_LEVELS = 16.0  # pixel values are 0..16
INSTALL = "needs scikit-learn (MLflow installs it): pip install scikit-learn"


@dataclass
class DigitsData(DataConfig):
    name: str = NAME
    test_fraction: float = 0.2  # 359 of the 1,797 images, 35 to 37 of each digit


Schema = DigitsData  # the interface's name for it (numgrad.data.base)


def check(cfg: Any) -> None:
    pass  # the schema's types say it all


def sizes(cfg: Any) -> Sizes:
    return Sizes(SAMPLES, FEATURES)


def load(cfg: Any, shape: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``x`` of shape (1797, 64) in [0, 1], ``t`` the digits 0..9.

    Examples
    --------
    >>> x, t = load(None, [64, 10], None)
    >>> x.shape, float(x.max()), np.bincount(t)[:3].tolist()
    ((1797, 64), 1.0, [178, 182, 177])
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError("data", NAME, INSTALL) from None
    digits = load_digits()
    return np.ascontiguousarray(digits.data / INK_LEVELS), digits.target.astype(np.int64)


def dataset_name(cfg: Any, seed: int) -> str:
    return NAME


def dataset_source(cfg: Any) -> Path | None:
    """scikit-learn's ``digits.csv.gz``, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def blame(cfg: Any, part: str) -> None:
    return None  # a fixed set: no field sets its size or values
