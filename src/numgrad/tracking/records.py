"""What a run's records look like in MLflow: names, params, sampled steps, MLflow's limits.

Pure functions, no mlflow import: the journal is written (and checked) with them
before any store is contacted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from numgrad.descent import StepRecord
from numgrad.overrides import is_under, parse_override

# MLflow's limits (mlflow.utils.validation), repeated here so that checking them does
# not import mlflow.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_ENTITIES_PER_BATCH = 1000  # metrics, params and tags of one log_batch together

LONG_VALUE = "<see config.yaml>"  # a param value too long for MLflow; config.yaml has it
# The per-step metrics are the step record's measurements: one definition, in descent.py.
STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepRecord))
STEP_METRICS = tuple(name for name in STEP_FIELDS if name not in ("step", "seconds"))
SET_LIMIT = 100_000  # sampled steps kept as a set up to this many


def run_name_from(overrides: Sequence[str]) -> str:
    """A short run name from the command-line overrides: last key component ``=`` value.

    ``hydra.*``, ``tracking.*`` and ``rerun_of`` overrides are left out (they say where
    to log, not what ran); numbers are written in Python's shortest form, at most 6 significant
    digits (an Optuna trial's ``lr=0.15676677195506075`` reads ``lr=0.156767``; the
    params keep every digit).

    Examples
    --------
    >>> run_name_from(["optimizer.lr=0.5", "gradient.h=1e-3", "hydra.run.dir=/tmp/x"])
    'lr=0.5,h=0.001'
    >>> run_name_from(["data=blobs", "+extra.key=1", "tracking.uri=http://127.0.0.1:5000"])
    'data=blobs,key=1'
    >>> run_name_from(["optimizer.lr=0.15676677195506075"])
    'lr=0.156767'
    >>> run_name_from(["optimizer.steps=3", "optimizer.lr=0.5", "optimizer.steps=1"])
    'steps=1,lr=0.5'
    >>> run_name_from([])
    'default'
    """
    parts: dict[str, str] = {}  # a key given twice (a rerun's own overrides) shows its last value
    for override in overrides:
        key, value, deleted = parse_override(override)
        if is_under(key, ["hydra", "tracking", "rerun_of"]):
            continue
        short = re.split(r"[./]", key)[-1] or key
        shown = "" if value is None else "=" + short_number(value)
        parts[key] = ("~" if deleted else "") + short + shown
    return clip(",".join(parts.values()) or "default", MAX_KEY)


def short_number(text: str) -> str:
    """A number as typed, in Python's shortest form at 6 significant digits; else the text.

    Examples
    --------
    >>> short_number("007"), short_number("1e-3"), short_number("abc"), short_number("inf")
    ('7', '0.001', 'abc', 'inf')
    """
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return repr(float(f"{value:.6g}")) if math.isfinite(value) else text


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as dotted-key parameters; values too long for MLflow become a placeholder.

    Lists are written as JSON; nothing is ever abbreviated (no ``str(ndarray)``).

    Examples
    --------
    >>> flatten_params({"optimizer": {"lr": 0.5}, "net": {"shape": [2, 3], "W": None}})
    {'optimizer.lr': '0.5', 'net.shape': '[2, 3]', 'net.W': 'None'}
    >>> flatten_params({"data": {"x": list(range(3000))}})
    {'data.x': '<see config.yaml>'}
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name + "."))
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, list | tuple | Mapping):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        out[name] = text if len(text) <= MAX_PARAM_VALUE else LONG_VALUE
    return out


def fit_tag(text: str, placeholder: str = "") -> str:
    """A tag value within MLflow's limit: ``placeholder`` if given, else the text clipped."""
    if len(text) <= MAX_TAG_VALUE:
        return text
    return placeholder or clip(text, MAX_TAG_VALUE)


def short_message(exc: BaseException) -> str:
    """An exception's message on one line, at most 500 characters."""
    text = " ".join(str(exc).split())
    return clip(text, 503) if text else type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """``"ValueError: boom"``: the exception's type and its one-line message."""
    return f"{type(exc).__name__}: {short_message(exc)}"


def plain(value: Any) -> Any:
    """Plain JSON/YAML-safe containers (enums and numpy scalars as their values).

    Examples
    --------
    >>> plain({"shape": (2, np.int64(3)), "w": np.zeros(1)})
    {'shape': [2, 3], 'w': [0.0]}
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(getattr(value, "value", value))


def sampled_steps(planned_steps: int, max_points: int, log_every: int = 1) -> Collection[int]:
    """The steps whose metrics go to the store: at most ``max_points``, evenly spaced.

    Candidates are every ``log_every``-th step plus the last planned step; the first
    and the last planned step are always kept. Nothing is materialised: membership
    is arithmetic, so neither a long run nor a huge ``max_points`` costs memory.

    Examples
    --------
    >>> list(sampled_steps(10, 4))
    [0, 3, 7, 10]
    >>> list(sampled_steps(10, 100, log_every=4))
    [0, 4, 8, 10]
    >>> 10**9 in sampled_steps(10**9, 1000), 10**9 - 1 in sampled_steps(10**9, 1000)
    (True, False)
    """
    sample = _Sample(max(int(planned_steps), 0), max(int(log_every), 1), int(max_points))
    # A set answers "is this step sampled?" 30x faster, a question asked at every step;
    # only a huge max_points stays arithmetic.
    return _SortedSet(sample) if len(sample) <= SET_LIMIT else sample


class _SortedSet(frozenset):
    """A frozenset (membership in C) that iterates in ascending order."""

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(frozenset.__iter__(self)))


class _Sample(Collection[int]):
    """Steps ``0, k, 2k, ... <= n`` plus ``n``; if more than ``m``, ``m`` of them evenly spaced."""

    def __init__(self, n: int, k: int, m: int) -> None:
        self.n, self.k = n, k
        self.multiples = n // k + 1
        self.count = self.multiples + (1 if (self.multiples - 1) * k != n else 0)
        self.m = min(max(m, 2), self.count)

    def _candidate(self, j: int) -> int:
        return j * self.k if j < self.multiples else self.n

    def _pick(self, i: int) -> int:
        """Candidate index of the i-th sampled point: round(i * (count-1) / (m-1)), exactly."""
        if self.m == self.count:
            return i
        c, m = self.count - 1, self.m - 1
        return (2 * i * c + m) // (2 * m)

    def __len__(self) -> int:
        return self.m

    def __iter__(self) -> Iterator[int]:
        return (self._candidate(self._pick(i)) for i in range(self.m))

    def __contains__(self, step: object) -> bool:
        try:
            step = operator.index(step)  # numpy integers too
        except TypeError:
            return False
        if step == self.n:
            j = self.count - 1
        elif 0 <= step < self.n and step % self.k == 0:
            j = step // self.k
        else:
            return False
        if self.m == self.count:
            return True
        i0 = j * (self.m - 1) // (self.count - 1)  # the pick, if any, is i0 or next to it
        return any(self._pick(i) == j for i in (i0 - 1, i0, i0 + 1) if 0 <= i < self.m)
