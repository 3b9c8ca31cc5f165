"""The config schema (registered in Hydra's ConfigStore) and :func:`validate`.

Types are checked by OmegaConf when the config is composed (``optimizer.lr=abc``
fails there, with Hydra's message). What a type cannot judge (nan, ranges, shapes)
is checked by :func:`validate` before any work starts, and reported as a
:class:`ConfigError` naming the field and the offending value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from numgrad import data as sources
from numgrad.data import DataConfig
from numgrad.errors import ConfigError
from numgrad.errors import finite_positive as _finite_positive

__all__ = ["ConfigError", "DataConfig", "NumgradConfig", "register_configs", "validate"]


class Init(Enum):
    normal = "normal"
    zeros = "zeros"
    given = "given"
    run = "run"  # W_final of a logged run (net.from_run), read from the tracking store


class Method(Enum):
    vectorized = "vectorized"
    loop = "loop"
    analytic = "analytic"


class SchemeName(Enum):
    """The finite difference (numgrad.schemes.SCHEMES), each with a loop and a vectorized engine."""

    central = "central"
    forward = "forward"
    central4 = "central4"
    complex = "complex"


#: ``gradient.h=auto``: the scheme's textbook step for the dtype, scaled to W.
AUTO_H = "auto"


class DType(Enum):
    """The float precision of the whole descent: W, x, every engine, the loss."""

    float32 = "float32"
    float64 = "float64"


@dataclass
class NetConfig:
    shape: list[int] = field(default_factory=lambda: [2, 3])
    init: Init = Init.normal
    scale: float = 1.0
    W: Any = None
    # net.init=run: the MLflow run id whose weights/W_final.npy is W0.
    from_run: str | None = None


@dataclass
class GradientConfig:
    method: Method = Method.vectorized
    scheme: SchemeName = SchemeName.central
    # A positive number, or "auto" (the scheme's textbook h; the run logs the h it used).
    # Any, since OmegaConf 2.3 has no float-or-string type: validate() checks it.
    h: Any = 1e-4
    check: bool = False
    # The float precision of the descent (W, x, engines, loss); data sources stay float64.
    dtype: DType = DType.float64


@dataclass
class OptimizerConfig:
    lr: float = 0.1
    steps: int = 100
    tol: float = 0.0
    # Samples per update, drawn from the run's generator each step; null: all of them.
    batch_size: int | None = None


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "numgrad"
    run_name: str | None = None
    log_every: int = 1
    max_points: int = 1000
    flush_seconds: float = 2.0
    # Journal only (no store contacted, mlflow not imported); numgrad-sync uploads later.
    offline: bool = False
    # At the end of a run, how long to wait for a store that went away before exiting 75.
    outage_grace_seconds: float = 30.0
    history_max_rows: int = 1_000_000
    # Log the final SimpleNet as an MLflow model (pyfunc, servable) of the finished run.
    log_model: bool = True
    # Draw figures/loss.png, grad_norm.png and weights.png. Most of a short tracked job's
    # cost in a sweep; MLflow charts the metrics without them.
    figures: bool = True
    # A local sweep's upload processes, its sender included; null: one per 4 cores (1 to 4).
    # Above 1, a SQLite store is switched to WAL mode when the second one starts.
    uploaders: int | None = None


@dataclass
class NumgradConfig:
    seed: int = 0
    # One schema per option of the data group (numgrad.data): data=<name> sets it.
    data: DataConfig = MISSING
    net: NetConfig = field(default_factory=NetConfig)
    gradient: GradientConfig = field(default_factory=GradientConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Progress bar on stderr: None shows it on a terminal, outside multirun workers.
    progress: bool | None = None
    # Set by numgrad-rerun: the MLflow run this run repeats (tagged numgrad.rerun_of).
    rerun_of: str | None = None


def register_configs() -> None:
    """Register the schema that ``conf/config.yaml`` names first in its defaults list,
    and each data option's, which ``conf/data/<name>.yaml`` names in its own."""
    store = ConfigStore.instance()
    store.store(name="numgrad_schema", node=NumgradConfig)
    for name, schema in sources.schemas().items():
        store.store(name=name, node=schema)


#: An MLflow run id: 32 lowercase hex digits (a uuid4's hex).
RUN_ID = re.compile(r"[0-9a-f]{32}")


MAX_UPLOADERS = 16  # SQLite takes one write at a time: more processes would only wait


def check_uploaders(value: int | None) -> None:
    """A ConfigError for a ``tracking.uploaders`` outside 1 to :data:`MAX_UPLOADERS`.

    >>> try:
    ...     check_uploaders(0)
    ... except ConfigError as exc:
    ...     print(exc)
    invalid tracking.uploaders=0: must be from 1 to 16, or null (one per 4 cores)
    """
    if value is not None and not 1 <= value <= MAX_UPLOADERS:
        why = f"must be from 1 to {MAX_UPLOADERS}, or null (one per 4 cores)"
        raise ConfigError("tracking.uploaders", value, why)


def check_run_id(name: str, value: Any) -> None:
    """Refuse what cannot be an MLflow run id before any store is asked about it.

    Examples
    --------
    >>> check_run_id("net.from_run", "0123456789abcdef0123456789abcdef")
    >>> check_run_id("net.from_run", "latest")
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid net.from_run='latest': not an MLflow run id (32 hex digits)
    """
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise ConfigError(name, value, "not an MLflow run id (32 hex digits)")


def _check_h(h: Any) -> None:
    """``gradient.h``: ``auto`` or a finite positive number (an int is one; a bool is not)."""
    if h == AUTO_H:
        return
    if isinstance(h, bool) or not isinstance(h, int | float):
        raise ConfigError("gradient.h", h, f"must be a positive number or {AUTO_H}")
    _finite_positive("gradient.h", float(h))


def validate(cfg: Any) -> None:
    """Check what the schema's types cannot: ranges, finiteness, shapes.

    ``cfg`` is the composed config (a DictConfig or a :class:`NumgradConfig`).
    Data-dependent checks (shape against the data, labels in range) happen when
    the data is loaded, still before any run is created.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> from numgrad.data import article
    >>> cfg = OmegaConf.structured(NumgradConfig(data=article.Schema(x=[0.6, 0.9], t=[2])))
    >>> validate(cfg)
    >>> cfg.optimizer.lr = -1.0
    >>> validate(cfg)
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid optimizer.lr=-1.0: must be > 0
    """
    # numpy's default_rng refuses a negative seed with a traceback of its own.
    if cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be >= 0")
    shape = list(cfg.net.shape)
    if len(shape) != 2 or any(n < 1 for n in shape):
        raise ConfigError("net.shape", shape, "must be [n_inputs, n_classes], both >= 1")
    # With one class softmax is always 1: the loss is -log(1 + 1e-7), nothing to learn.
    if shape[1] < 2:
        raise ConfigError("net.shape", shape, "a classifier needs at least 2 classes")
    if cfg.net.init == Init.given and cfg.net.W is None:
        raise ConfigError("net.W", None, "net.init=given needs net.W, a list of rows")
    if cfg.net.W is not None and cfg.net.init != Init.given:
        raise ConfigError("net.init", cfg.net.init.name, "net.W is given; set net.init=given")
    if cfg.net.init == Init.run and cfg.net.from_run is None:
        raise ConfigError("net.from_run", None, "net.init=run needs net.from_run=<run id>")
    if cfg.net.from_run is not None and cfg.net.init != Init.run:
        raise ConfigError("net.init", cfg.net.init.name, "net.from_run is given; set net.init=run")
    if cfg.net.from_run is not None:
        check_run_id("net.from_run", cfg.net.from_run)
    if cfg.rerun_of is not None:
        check_run_id("rerun_of", cfg.rerun_of)
    _finite_positive("net.scale", cfg.net.scale, allow_zero=True)
    _check_h(cfg.gradient.h)
    _finite_positive("optimizer.lr", cfg.optimizer.lr)
    _finite_positive("optimizer.tol", cfg.optimizer.tol, allow_zero=True)
    if cfg.optimizer.steps < 0:
        raise ConfigError("optimizer.steps", cfg.optimizer.steps, "must be >= 0")
    if cfg.optimizer.batch_size is not None and cfg.optimizer.batch_size < 1:
        raise ConfigError("optimizer.batch_size", cfg.optimizer.batch_size, "must be >= 1")
    sources.check(cfg.data)  # the source's own ranges
    tracking = cfg.tracking
    if tracking.log_every < 1:
        raise ConfigError("tracking.log_every", tracking.log_every, "must be >= 1")
    if tracking.max_points < 2:
        raise ConfigError("tracking.max_points", tracking.max_points, "must be >= 2")
    _finite_positive("tracking.flush_seconds", tracking.flush_seconds)
    _finite_positive(
        "tracking.outage_grace_seconds", tracking.outage_grace_seconds, allow_zero=True
    )
    if tracking.history_max_rows < 2:
        raise ConfigError("tracking.history_max_rows", tracking.history_max_rows, "must be >= 2")
    check_uploaders(tracking.uploaders)
    if not tracking.experiment.strip():
        raise ConfigError("tracking.experiment", tracking.experiment, "must not be empty")
