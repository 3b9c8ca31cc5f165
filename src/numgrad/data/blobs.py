"""``data=blobs``: Gaussian class clusters drawn from the run's generator, sized by net.shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.data.base import DataConfig, Sizes
from numgrad.errors import ConfigError, finite_positive

NAME = "blobs"


@dataclass
class BlobsData(DataConfig):
    name: str = NAME
    n_samples: int = 60
    spread: float = 1.0  # the clusters' standard deviation; their centres are 3 x N(0, 1)


Schema = BlobsData  # the interface's name for it (numgrad.data.base)


def check(cfg: Any) -> None:
    if cfg.n_samples < 1:
        raise ConfigError("data.n_samples", cfg.n_samples, "must be >= 1")
    finite_positive("data.spread", cfg.spread, allow_zero=True)


def sizes(cfg: Any) -> Sizes:
    return Sizes(cfg.n_samples, None)  # as many features as net.shape has inputs


def load(cfg: Any, shape: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(cfg.n_samples, shape[0], shape[1], cfg.spread, rng)


def make_blobs(
    n_samples: int, n_inputs: int, n_classes: int, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Gaussian clusters: class ``k`` around a standard-normal centre scaled by 3.

    Examples
    --------
    >>> x, t = make_blobs(6, 2, 3, 0.5, np.random.default_rng(0))
    >>> x.shape, t.tolist()
    ((6, 2), [0, 1, 2, 0, 1, 2])
    """
    centres = 3.0 * rng.standard_normal((n_classes, n_inputs))
    labels = np.arange(n_samples) % n_classes  # balanced, every class present when n >= k
    x = centres[labels] + spread * rng.standard_normal((n_samples, n_inputs))
    return x, labels


def dataset_name(cfg: Any, seed: int) -> str:
    """``blobs(seed=7,n=60)``, with ``spread`` when it is not 1; another ``net.shape``
    makes other data under the same name (the digest tells them apart).

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> dataset_name(OmegaConf.structured(BlobsData(n_samples=9, spread=0.5)), seed=7)
    'blobs(seed=7,n=9,spread=0.5)'
    """
    spread = "" if cfg.spread == 1.0 else f",spread={cfg.spread:g}"
    return f"{NAME}(seed={seed},n={cfg.n_samples}{spread})"


def dataset_source(cfg: Any) -> Path | None:
    return None  # drawn in code from the seed


def blame(cfg: Any, part: str) -> tuple[str, Any] | None:
    return ("data.n_samples", cfg.n_samples) if part == "samples" else None
