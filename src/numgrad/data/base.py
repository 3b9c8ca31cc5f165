"""What every data source is: the base of its schema, and the functions the package calls.

A source is one module of :mod:`numgrad.data` and one YAML, ``conf/data/<NAME>.yaml``,
whose defaults list names the module's schema first (``/data_<NAME>_schema@_here_``,
stored by :func:`numgrad.config.register_configs`). The module has:

``NAME``
    The option's name: ``data=<NAME>``, and the schema's ``name``.
``Schema``
    Its dataclass, a subclass of :class:`DataConfig`: a field it does not have does
    not exist for it (``data=blobs data.x=...`` fails when the config is composed).
``check(cfg)``
    What the schema's types cannot judge (ranges, a required path), as
    :class:`~numgrad.errors.ConfigError`.
``sizes(cfg)``
    :class:`Sizes` known before loading, or None when only loading tells (a file).
``load(cfg, shape, rng)``
    ``(x, t)``: float64 inputs, integer labels or one-hot rows; ``shape`` is ``net.shape``.
``dataset_name(cfg, seed)``, ``dataset_source(cfg)``
    The name MLflow shows in the Dataset column, and the file the data came from
    (None when made in code).
``blame(cfg, part)``
    The config field, and its value, that sets ``part`` of the data (``"samples"``,
    ``"x"`` or ``"t"``), for an error message; None when no field does (the shipped
    tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from omegaconf import MISSING


@dataclass
class DataConfig:
    """Fields every source has. ``name`` is set by the option's schema."""

    name: str = MISSING
    # Held out of training, stratified by class, drawn from the run's generator
    # (numgrad.data.split); its loss and accuracy are logged beside the training curve.
    test_fraction: float = 0.0


class Sizes(NamedTuple):
    """Samples and features known before loading; features None where net.shape sets them."""

    samples: int
    features: int | None


class Source(Protocol):
    """The module of a data source, as :data:`numgrad.data.SOURCES` holds it."""

    NAME: str
    Schema: type

    def check(self, cfg: Any) -> None: ...

    def sizes(self, cfg: Any) -> Sizes | None: ...

    def load(
        self, cfg: Any, shape: list[int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def dataset_name(self, cfg: Any, seed: int) -> str: ...

    def dataset_source(self, cfg: Any) -> Path | None: ...

    def blame(self, cfg: Any, part: str) -> tuple[str, Any] | None: ...
