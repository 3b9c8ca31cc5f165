"""Data sources: the table :data:`SOURCES` picks the module of ``data.name``; all ask through it.

One module per source (:mod:`~numgrad.data.article`, :mod:`~numgrad.data.blobs`,
:mod:`~numgrad.data.iris`, :mod:`~numgrad.data.file`), each with the interface that
:mod:`numgrad.data.base` describes, and one YAML in ``conf/data/``. Nothing outside this
package asks which source a run has: adding one is a module, a YAML and a line below.
Inputs are float64 whatever ``gradient.dtype`` says (the runner casts them); problems
are reported as :class:`~numgrad.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from numgrad.data import article, blobs, digits, file, iris
from numgrad.data.base import DataConfig, Sizes, Source
from numgrad.data.holdout import check_fraction, held_out
from numgrad.errors import ConfigError

SOURCES: dict[str, Source] = {m.NAME: m for m in (article, blobs, iris, file, digits)}
DEFAULT = article.NAME  # conf/config.yaml's data option: a rerun's plan leaves data= out for it

__all__ = [
    "DEFAULT", "SOURCES", "DataConfig", "Sizes", "blame", "check", "dataset_name", "dataset_source",
    "load_data", "schemas", "sizes", "source", "split",
]  # fmt: skip


def schemas() -> dict[str, type]:
    """ConfigStore entries ``data_<name>_schema`` -> the option's dataclass.

    ``conf/data/<name>.yaml`` names its entry first in its defaults list. They are stored
    outside the ``data`` group, so that they are not options of it (``--help`` lists
    the group's options).

    Examples
    --------
    >>> schemas()["data_iris_schema"].__name__, schemas()["data_iris_schema"]().name
    ('IrisData', 'iris')
    """
    return {f"data_{name}_schema": module.Schema for name, module in SOURCES.items()}


def source(data_cfg: Any) -> Source:
    """The module of ``data_cfg``'s source; ConfigError for a name no schema fits.

    ``data.name`` is set by the option (``data=iris``); changing it alone would give
    one source's fields to another, so the name must be the schema's own.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> source(OmegaConf.structured(iris.Schema)).NAME
    'iris'
    """
    module = SOURCES.get(data_cfg.name)
    if module is None or not _has_schema(data_cfg, module.Schema):
        raise ConfigError(
            "data.name", data_cfg.name, f"choose a source with data=<one of {list(SOURCES)}>"
        )
    return module


def load_data(
    data_cfg: Any, shape: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, t)`` for ``data_cfg``; ``shape`` is ``net.shape`` (blobs follow it).

    ``t`` is returned as given (one-hot rows or integer labels); the net checks it
    against its weights.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> cfg = OmegaConf.structured(article.Schema(x=[0.6, 0.9], t=[0, 0, 1]))
    >>> x, t = load_data(cfg, [2, 3], np.random.default_rng(0))
    >>> x.tolist(), t.tolist()
    ([0.6, 0.9], [0, 0, 1])
    """
    return source(data_cfg).load(data_cfg, shape, rng)


def check(data_cfg: Any) -> None:
    """What the source's schema types cannot judge (ranges, a required path); ConfigError."""
    source(data_cfg).check(data_cfg)
    check_fraction(data_cfg.test_fraction)


Part = tuple[np.ndarray, np.ndarray]


def split(
    x: np.ndarray, labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[Part, Part | None]:
    """``(training, held-out)`` parts of prepared ``x`` and integer ``labels``.

    With ``test_fraction`` 0, all of it is for training, ``held-out`` is None and
    nothing is drawn from ``rng`` (the run's numbers stay those of a run without a split).

    Examples
    --------
    >>> x, labels = np.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1])
    >>> train, test = split(x, labels, 0.5, np.random.default_rng(0))
    >>> train[0].shape, test[0].shape, sorted(test[1].tolist())
    ((2, 2), (2, 2), [0, 1])
    >>> split(x, labels, 0.0, None)[1] is None
    True
    """
    if test_fraction == 0:
        return (x, labels), None
    mask = held_out(labels, test_fraction, rng)
    return (x[~mask], labels[~mask]), (x[mask], labels[mask])


def sizes(data_cfg: Any) -> Sizes | None:
    """Samples and features known before loading; None when only loading tells."""
    return source(data_cfg).sizes(data_cfg)


def blame(data_cfg: Any, part: str) -> tuple[str, Any] | None:
    """The field (and value) that sets ``part`` (``samples``, ``x``, ``t``); None if none does."""
    return source(data_cfg).blame(data_cfg, part)


def dataset_name(data_cfg: Any, seed: int) -> str:
    """The name MLflow shows for the data (the source's :func:`dataset_name`)."""
    return source(data_cfg).dataset_name(data_cfg, seed)


def dataset_source(data_cfg: Any) -> Path | None:
    """The file the data came from, None when made in code."""
    return source(data_cfg).dataset_source(data_cfg)


def _has_schema(data_cfg: Any, schema: type) -> bool:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(data_cfg):
        return OmegaConf.get_type(data_cfg) is schema
    return isinstance(data_cfg, schema)
