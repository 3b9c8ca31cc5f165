"""``data=article``: inline arrays ``data.x`` and ``data.t``; by default the book's one sample."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from numgrad.data.base import DataConfig, Sizes
from numgrad.data.tables import labels
from numgrad.errors import ConfigError

NAME = "article"


@dataclass
class ArticleData(DataConfig):
    name: str = NAME
    # A list of rows or one row (one sample); t holds labels or one-hot rows.
    x: Any = None
    t: Any = None


Schema = ArticleData  # the interface's name for it (numgrad.data.base)


def check(cfg: Any) -> None:
    """Both arrays or neither: one alone is a typo."""
    if (cfg.x is None) != (cfg.t is None):
        raise ConfigError("data.t" if cfg.t is None else "data.x", None, "give both x and t")
    if cfg.x is None:
        raise ConfigError("data.x", None, "data=article needs data.x and data.t")


def sizes(cfg: Any) -> Sizes:
    """Rows of ``data.x`` (one row is one sample), and their length.

    Examples
    --------
    >>> sizes(OmegaConf.structured(ArticleData(x=[[0.6, 0.9]] * 4, t=[0, 1, 2, 0])))
    Sizes(samples=4, features=2)
    """
    x = OmegaConf.to_container(cfg.x) if OmegaConf.is_config(cfg.x) else cfg.x
    if not isinstance(x, list):  # a single number: load() says what is wrong with it
        return Sizes(1, None)
    rows = x if x and isinstance(x[0], list) else [x]
    return Sizes(len(rows), len(rows[0]))


def load(cfg: Any, shape: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(x, t)`` as given, numeric; ``t`` as int64 when it holds integers.

    Examples
    --------
    >>> x, t = load(OmegaConf.structured(ArticleData(x=[0.6, 0.9], t=[0, 0, 1])), [2, 3], None)
    >>> x.tolist(), t.tolist()
    ([0.6, 0.9], [0, 0, 1])
    """
    return _inline(cfg.x, "data.x"), labels(_inline(cfg.t, "data.t"))


def dataset_name(cfg: Any, seed: int) -> str:
    """``article`` for the book's sample, ``article(custom)`` for other inline data."""
    return NAME if _is_book_sample(cfg) else f"{NAME}(custom)"


def dataset_source(cfg: Any) -> Path | None:
    return None  # made in code: the config holds it


def blame(cfg: Any, part: str) -> tuple[str, Any]:
    """``data.t`` for the labels, else ``data.x`` (it sets the samples too)."""
    field = "t" if part == "t" else "x"
    return f"data.{field}", OmegaConf.to_container(cfg[field])


def _inline(value: Any, field: str) -> np.ndarray:
    plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    try:
        return np.asarray(plain, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, plain, f"not a numeric array ({exc})") from None


def _is_book_sample(cfg: Any) -> bool:
    """True when the inline data are those of ``conf/data/article.yaml`` (the book's)."""
    given = OmegaConf.to_container(cfg) if OmegaConf.is_config(cfg) else dict(cfg)
    try:
        return all(
            np.array_equal(np.asarray(given[k], dtype=float), book)
            for k, book in zip(("x", "t"), _book_sample(), strict=True)
        )
    except (TypeError, ValueError):
        return False


@functools.cache
def _book_sample() -> tuple[np.ndarray, np.ndarray]:
    """The book's x and t, read once a process (a sweep's jobs each ask: 4 ms a read)."""
    book = OmegaConf.load(str(resources.files("numgrad") / "conf" / "data" / "article.yaml"))
    return np.asarray(book["x"], dtype=float), np.asarray(book["t"], dtype=float)
