"""The one-line refusal of a config value (:class:`ConfigError`) and the range checks that raise it.

Its own module so that the data sources (:mod:`numgrad.data`), whose schemas
:mod:`numgrad.config` registers, can raise it without importing the config back.
"""

from __future__ import annotations

import math
from typing import Any

from numgrad.command import USAGE


class ConfigError(ValueError):
    """A config value that composes but makes no sense; the message names the field.

    Examples
    --------
    >>> str(ConfigError("data.n_samples", 0, "must be >= 1"))
    'invalid data.n_samples=0: must be >= 1'
    """

    exit_status = USAGE  # bad input: nothing ran (numgrad.command)

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"invalid {field}={_show(value)}: {reason}")


def finite_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Refuse nan, infinities, negatives and (unless ``allow_zero``) zero, naming ``name``.

    Examples
    --------
    >>> finite_positive("optimizer.lr", 0.5)
    >>> finite_positive("data.spread", float("nan"))
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid data.spread=nan: must be a finite number
    """
    if not math.isfinite(value):
        raise ConfigError(name, value, "must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, value, "must be >= 0" if allow_zero else "must be > 0")


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
