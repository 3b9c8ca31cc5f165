"""MLflow run lifecycle: one ``numgrad`` run is one MLflow run.

:func:`open_sink` checks the tracking settings (without importing mlflow) and
returns a sink; ``with sink:`` creates the run, :meth:`MlflowSink.log_step` buffers
step records, and leaving the block uploads everything and sets the run status:
FINISHED, FAILED (any exception, divergence included) or KILLED (Ctrl-C, SIGTERM).

Why it looks the way it does:

- mlflow is imported lazily (``tracking.enabled=false`` must not import it at all).
- ``MlflowClient`` only, never the fluent API: no global "active run" exists, so a
  reused worker process (Hydra's joblib launcher) cannot inherit one, and MLflow's
  exit hook cannot mark an interrupted run FINISHED.
- Per step, :meth:`MlflowSink.log_step` only appends to a list; every
  ``flush_seconds`` the pending records go to ``history.csv`` (every step) and, for
  at most ``max_points`` evenly spaced steps, to the store in ``log_batch`` calls.
- ``with sink:`` returns at once: a thread imports mlflow and creates the run while
  a short descent already runs (at most ``OVERLAP_SECONDS``, then the loop waits, as
  sharing the GIL would slow the import several times over).
- The figures are drawn by a helper process (``python -m numgrad.plots``) started
  when the run opens: its matplotlib import and drawing overlap with mlflow's import.
- At exit, ``gc.freeze`` spares the interpreter its full collections over mlflow's
  objects (~0.6 s per process).
- SQLite: table creation and experiment get-or-create run under a file lock
  (``<db>.lock``, :func:`numgrad.store.file_lock`), and writes retry on "database is
  locked". URI checks, the lock and orphan detection live in :mod:`numgrad.store`.

Examples
--------
>>> sink = open_sink({"enabled": False}, config={}, overrides=[], output_dir=None,
...                  planned_steps=0)
>>> with sink:
...     sink.log_start(None)
>>> type(sink).__name__
'NullSink'
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import getpass
import json
import math
import operator
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.store import (
    ACTIVE_RUNS,
    TrackingError,
    check_uri,
    file_lock,
    git_commit,
    orphaned,
    resolve_uri,
    server_alive,
    sqlite_path,
)

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PARENT_RUN_ENV = "NUMGRAD_PARENT_RUN_ID"
LONG_VALUE = "<see config.yaml>"  # a param value too long for MLflow; config.yaml has it
W_METRICS_MAX = 64  # one metric per element of the final W up to this many elements

# MLflow's limits (mlflow.utils.validation), repeated here so that checking them
# does not import mlflow.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# The descent may run this long while mlflow loads in the background (a short run is
# then over, and its figures drawn, by the time the run exists); after that it waits.
OVERLAP_SECONDS = 0.1

HISTORY_FIELDS = (
    "step", "loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy",
    "grad_rel_error", "seconds",
)  # fmt: skip
STEP_METRICS = ("loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy")

_EXIT_HOOK = False
_jitter = random.Random()  # never the global random state: MLflow names runs from it


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM during a run."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")


# --------------------------------------------------------------------------- config


def run_name_from(overrides: Sequence[str]) -> str:
    """A short run name from the command-line overrides: last key component ``=`` value.

    ``hydra.*`` and ``tracking.*`` overrides are left out (they say where to log, not
    what ran); numbers are written in Python's shortest form, at most 6 significant
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
    >>> run_name_from([])
    'default'
    """
    parts = []
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+")
        deleted = key.startswith("~")
        key = key.lstrip("~")
        if key in ("hydra", "tracking") or key.startswith(("hydra.", "hydra/", "tracking.")):
            continue
        short = re.split(r"[./]", key)[-1] or key
        parts.append(("~" if deleted else "") + short + (sep + _short_number(value) if sep else ""))
    name = ",".join(parts) or "default"
    return name if len(name) <= 250 else name[:247] + "..."


def _short_number(text: str) -> str:
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return repr(float(f"{value:.6g}")) if math.isfinite(value) else text


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
    return _Sample(max(int(planned_steps), 0), max(int(log_every), 1), int(max_points))


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


def _setting(cfg: Any, key: str, default: Any) -> Any:
    if isinstance(cfg, Mapping):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None and default is not None else value


# ------------------------------------------------------------------------ open_sink


def open_sink(
    tracking_cfg: Any,
    *,
    config: Mapping[str, Any],
    overrides: Sequence[str],
    output_dir: Path | str | None,
    planned_steps: int,
) -> NullSink | MlflowSink:
    """Check the tracking settings and return the sink for one run.

    Returns a :class:`NullSink` (mlflow not imported) when tracking is disabled, else an
    :class:`MlflowSink`. Raises :class:`TrackingError` with a one-line message, before
    any run exists, for an unsupported URI scheme, an unwritable SQLite path or an
    unreachable tracking server.
    """
    if not _setting(tracking_cfg, "enabled", True):
        return NullSink()
    uri = check_uri(resolve_uri(_setting(tracking_cfg, "uri", None)))
    run_name = _setting(tracking_cfg, "run_name", None) or run_name_from(overrides)
    return MlflowSink(
        uri=uri,
        experiment=str(_setting(tracking_cfg, "experiment", "numgrad")),
        run_name=run_name,
        config=config,
        overrides=list(overrides),
        output_dir=Path(output_dir) if output_dir is not None else None,
        planned_steps=int(planned_steps),
        log_every=int(_setting(tracking_cfg, "log_every", 1)),
        max_points=int(_setting(tracking_cfg, "max_points", 1000)),
        flush_seconds=float(_setting(tracking_cfg, "flush_seconds", 2.0)),
    )


# ---------------------------------------------------------------------------- sinks


class NullSink:
    """The sink of ``tracking.enabled=false``: accepts everything, records nothing."""

    run_id: str | None = None

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def log_start(self, W_init: np.ndarray | None) -> None:
        pass

    def log_step(self, record: Any) -> None:
        pass

    def log_end(self, descent: Any, W_final: np.ndarray | None = None) -> None:
        pass

    def describe(self) -> str | None:
        return None


class MlflowSink:
    """One MLflow run; use as a context manager around the descent (see :func:`open_sink`).

    ``with sink:`` starts a thread that imports mlflow, opens the store and creates the
    run, and returns at once. For up to ``OVERLAP_SECONDS`` the descent runs meanwhile
    (records are buffered), so a short run is done, and its figures drawn by the
    figure worker, while mlflow is still loading; a longer run then waits for the
    thread. Store errors found there surface at that point or when the block ends.
    """

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        config: Mapping[str, Any],
        overrides: list[str],
        output_dir: Path | None,
        planned_steps: int,
        log_every: int = 1,
        max_points: int = 1000,
        flush_seconds: float = 2.0,
    ) -> None:
        self.uri, self.experiment, self.run_name = uri, experiment, run_name
        self.config, self.overrides, self.output_dir = config, overrides, output_dir
        self.planned_steps = planned_steps
        self.flush_seconds = flush_seconds
        self.selected = sampled_steps(planned_steps, max_points, log_every)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._client: Any = None
        self._mlflow: Any = None  # (Metric, Param, RunTag) once imported
        self._opener: threading.Thread | None = None
        self._open_error: BaseException | None = None
        self._pending: list[Any] = []  # records not yet in history.csv
        self._metrics: list[tuple[str, float, int, int]] = []  # (key, value, ms, step) not sent
        self._last: Any = None  # the last record seen
        self._last_queued = -1  # the last step whose metrics were queued
        self._wall0: float | None = None  # wall time of the descent's start
        self._next_flush = self._overlap_until = math.inf
        self._stage: Path | None = None
        self._csv: Any = None
        self._figures: subprocess.Popen[bytes] | None = None
        self._W_init: np.ndarray | None = None
        self._end: dict[str, Any] | None = None
        self._store_down = False
        self._signals: dict[int, Any] = {}
        self._defer = 0
        self._deferred: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MlflowSink:
        self._install_signals()
        try:
            self._stage = Path(tempfile.mkdtemp(prefix="numgrad-run-"))
            (self._stage / "artifacts" / "weights").mkdir(parents=True)
            self._figures = _start_figure_worker()
            self._write_inputs()
            self._opener = threading.Thread(target=self._open_quietly, name="numgrad-mlflow-open")
            self._opener.start()
        except BaseException:
            self._restore_signals()
            self._cleanup()
            raise
        # The first flush comes when the overlap ends: the loop then waits for the run.
        self._overlap_until = self._next_flush = time.monotonic() + OVERLAP_SECONDS
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._finish(exc)
        return False

    def log_start(self, W_init: np.ndarray) -> None:
        """Save the initial weights (``weights/W_init.npy``, uploaded when the run ends)."""
        self._W_init = np.array(W_init, copy=True)
        np.save(self._stage / "artifacts" / "weights" / "W_init.npy", self._W_init)

    def log_step(self, record: Any) -> None:
        """Buffer one :class:`~numgrad.descent.StepRecord`; flush every ``flush_seconds``."""
        self._pending.append(record)
        if time.monotonic() >= self._next_flush:
            self.flush()

    def log_end(self, descent: Any, W_final: np.ndarray | None = None) -> None:
        """Remember the outcome of a completed descent; it is written when the run ends."""
        last, grad = descent.last_record, descent.last_gradient
        self._end = {
            "stop_reason": descent.stop_reason,
            "steps_taken": int(descent.steps_taken),
            "final_loss": float(last.loss) if last is not None else math.nan,
            "final_accuracy": float(last.accuracy) if last is not None else math.nan,
            "W_final": np.array(descent.W if W_final is None else W_final, copy=True),
            "gradient": None if grad is None else np.array(grad, copy=True),
        }

    def describe(self) -> str | None:
        """One line for the run summary: where to find the run."""
        if self.run_id is None:
            return None
        where = f"experiment '{self.experiment}' on {self.uri}"
        return f"mlflow: run {self.run_id} ({self.run_name}) in {where}"

    # --------------------------------------------------------------------- flush

    def flush(self) -> None:
        """Write pending records to ``history.csv`` and send the sampled ones to the store.

        Until the run exists (the opener thread is still busy) records stay buffered.
        """
        if self._opener is not None and self._opener.is_alive():
            if time.monotonic() < self._overlap_until:
                self._next_flush = time.monotonic() + 0.01
                return
            # A longer run: wait. Descent and import sharing the GIL slow the import
            # several times over (each of its file reads hands the GIL to the loop).
            self._opener.join()
        with self._deferring():
            self._drain_pending()
            self._raise_open_error()
            try:
                self._send_metrics()
            except Exception as exc:
                self._store_reachable()
                raise TrackingError(
                    f"lost the tracking store {self.uri} at step {self._last.step} "
                    f"({short_message(exc)}); the history so far is in the store and the run stays "
                    "RUNNING there until the next numgrad start on it marks it KILLED"
                ) from exc
        self._next_flush = time.monotonic() + self.flush_seconds

    def _drain_pending(self, final: bool = False) -> None:
        """Pending records to history.csv (all) and the metric queue (the sampled steps)."""
        records, self._pending = self._pending, []
        if records:
            if self._wall0 is None:
                self._wall0 = time.time() - records[-1].seconds
            self._csv.write("".join(map(_csv_row, records)))
            selected = self.selected
            for r in records:
                if r.step in selected:
                    self._queue(r)
            self._last = records[-1]
        # The last step of a run that stopped early or failed is always logged.
        if final and self._last is not None and self._last_queued != self._last.step:
            self._queue(self._last)

    def _queue(self, r: Any) -> None:
        step, ms = int(r.step), int((self._wall0 + r.seconds) * 1000)
        add, isfinite = self._metrics.append, math.isfinite
        for key in STEP_METRICS:
            value = float(getattr(r, key))
            if isfinite(value):  # MLflow stores inf as 1.8e308 and nan as 0: history.csv has it
                add((key, value, ms, step))
        if r.grad_rel_error is not None and isfinite(r.grad_rel_error):
            add(("grad_rel_error", float(r.grad_rel_error), ms, step))
        self._last_queued = step

    def _send_metrics(self) -> None:
        Metric = self._mlflow[0]
        while self._metrics:
            chunk = self._metrics[:MAX_METRICS_PER_BATCH]
            metrics = [Metric(key, value, ms, step) for key, value, ms, step in chunk]
            self.write(self._client.log_batch, self.run_id, metrics=metrics, synchronous=True)
            del self._metrics[: len(chunk)]

    # ---------------------------------------------------------------- the store

    def _open_quietly(self) -> None:
        try:
            self._open_run()
        except BaseException as exc:
            self._open_error = exc

    def _raise_open_error(self) -> None:
        exc = self._open_error
        if exc is None:
            return
        if isinstance(exc, TrackingError):
            raise exc
        raise TrackingError(
            f"cannot open an MLflow run on {self.uri}: {short_message(exc)}"
        ) from exc

    def _open_run(self) -> None:
        """Import mlflow, get or create the experiment, reconcile orphans, start the run."""
        # Imported here, never at module level: tracking.enabled=false must not load mlflow.
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        _skip_exit_collections()
        db = sqlite_path(self.uri)
        if db is not None:
            # Import the store module outside the lock: only the database work is serialised.
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        with file_lock(db):
            client = MlflowClient(tracking_uri=self.uri)  # creates the tables of a new store
            self.experiment_id = self.get_or_create_experiment(client, db)
            self.reconcile_orphans(client)
        run = self.write(
            client.create_run, self.experiment_id, tags=self._run_tags(), run_name=self.run_name
        )
        self._client, self._mlflow, self.run_id = client, (Metric, Param, RunTag), run.info.run_id
        ACTIVE_RUNS.add(self.run_id)
        params = flatten_params(self.config)
        long = sorted(k for k, v in params.items() if v == LONG_VALUE)
        tags = {"numgrad.params_in_config_yaml": ",".join(long)} if long else {}
        self._log_batch(params={k: v for k, v in params.items() if len(k) <= 250}, tags=tags)

    def get_or_create_experiment(self, client: Any, db: Path | None) -> str:
        """The experiment's id, creating it (tagged for the model-training view) if needed.

        Call it under :func:`numgrad.store.file_lock` for SQLite: two processes creating
        the same experiment at once would otherwise leave one run in Default.
        """
        key, kind = EXPERIMENT_KIND
        exp = self.write(client.get_experiment_by_name, self.experiment)
        if exp is None:
            # With SQLite, artifacts go next to the database, not into ./mlartifacts.
            location = (db.parent / "mlartifacts").as_uri() if db is not None else None
            try:
                return self.write(
                    client.create_experiment, self.experiment,
                    artifact_location=location, tags={key: kind},
                )  # fmt: skip
            except Exception as exc:  # created by another process in the meantime
                if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
                    raise
                exp = self.write(client.get_experiment_by_name, self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment '{self.experiment}' is deleted in {self.uri}: restore it "
                "(mlflow experiments restore) or choose another tracking.experiment"
            )
        if exp.tags.get(key) != kind:
            self.write(client.set_experiment_tag, exp.experiment_id, key, kind)
        return exp.experiment_id

    def _run_tags(self) -> dict[str, str]:
        tags = {
            "mlflow.user": user_name(),
            "mlflow.source.name": "numgrad",
            "mlflow.source.type": "LOCAL",
            "numgrad.overrides": fit_tag(" ".join(self.overrides), "<see overrides.yaml>"),
            "numgrad.host": socket.gethostname(),
            "numgrad.pid": str(os.getpid()),
        }
        if self.output_dir is not None:
            tags["numgrad.output_dir"] = fit_tag(str(Path(self.output_dir).absolute()), "")
        commit = git_commit(Path(__file__).resolve().parent)
        if commit:
            tags["numgrad.git_commit"] = tags["mlflow.source.git.commit"] = commit
        parent = os.environ.get(PARENT_RUN_ENV)
        if parent:
            tags["mlflow.parentRunId"] = parent
        return tags

    def reconcile_orphans(self, client: Any) -> None:
        """Mark RUNNING runs of this host whose process is gone KILLED, one line each."""
        host = socket.gethostname()
        if "'" in host:
            return
        runs = self.write(
            client.search_runs, [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`numgrad.host` = '{host}'",
            max_results=1000,
        )  # fmt: skip
        for run in runs:
            pid = run.data.tags.get("numgrad.pid", "")
            if not pid.isdigit() or not orphaned(run.info.run_id, int(pid), run.info.start_time):
                continue
            self.write(client.set_tag, run.info.run_id, "numgrad.stop_reason", "orphaned")
            self.write(client.set_terminated, run.info.run_id, "KILLED")
            print(
                f"numgrad: marked run {run.info.run_id} ({run.info.run_name}) KILLED: it was "
                f"RUNNING but its process {pid} on {host} is gone",
                file=sys.stderr,
            )

    def _log_batch(self, *, params: Mapping[str, str] = {}, tags: Mapping[str, str] = {}) -> None:
        """Params and tags in batches of MLflow's maximum size."""
        _, Param, RunTag = self._mlflow
        p = [Param(k, v) for k, v in params.items()]
        t = [RunTag(k, v) for k, v in tags.items()]
        n = MAX_PARAMS_TAGS_PER_BATCH
        for i in range(0, max(len(p), len(t)), n):
            self.write(self._client.log_batch, self.run_id, params=p[i : i + n],
                        tags=t[i : i + n], synchronous=True)  # fmt: skip

    def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the store, retrying with back-off while SQLite says "database is locked"."""
        delay = 0.05
        for attempt in range(10):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if "database is locked" not in str(exc) or attempt == 9:
                    raise
            time.sleep(delay * (0.5 + _jitter.random()))
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------- files

    def _write_inputs(self) -> None:
        import yaml

        art = self._stage / "artifacts"
        with open(art / "config.yaml", "w") as f:
            yaml.safe_dump(_plain(self.config), f, sort_keys=False)
        with open(art / "overrides.yaml", "w") as f:
            yaml.safe_dump(list(self.overrides), f)
        self._csv = open(art / "history.csv", "w", buffering=1 << 16)
        self._csv.write(",".join(HISTORY_FIELDS) + "\n")

    def _write_outputs(self, end: dict[str, Any] | None) -> None:
        """Final weights, and the arrays the figure worker draws."""
        art = self._stage / "artifacts"
        arrays = {} if self._W_init is None else {"W_init": self._W_init}
        if end is not None:
            W = end["W_final"]
            np.save(art / "weights" / "W_final.npy", W)
            with open(art / "weights" / "W_final.json", "w") as f:
                json.dump({"shape": list(W.shape), "dtype": str(W.dtype), "values": W.tolist()}, f)
            arrays["W_final"] = W
            if end["gradient"] is not None:
                arrays["gradient"] = end["gradient"]
        np.savez(self._stage / "figure_input.npz", **arrays)

    # -------------------------------------------------------------------- finish

    def _finish(self, exc: BaseException | None) -> None:
        """Flush, upload, set the status; never hides an exception already in flight.

        Order: history.csv and figures first (no store needed), then wait for the
        opener, then metrics, tags, artifacts, and the status last.
        """
        status, tags = _outcome(exc, self._end)
        problem: BaseException | None = None
        with self._deferring(deliver=False):
            try:
                self._drain_pending(final=True)
                self._csv.close()
                self._write_outputs(self._end if status == "FINISHED" else None)
                _request_figures(self._figures, self._stage)
                self._opener.join()
                self._raise_open_error()
                if isinstance(exc, TrackingError) and not self._store_reachable():
                    raise exc
                if status == "FINISHED":
                    self._metrics.extend(self._final_metrics())
                self._send_metrics()
                self._log_batch(tags=tags)
                _collect_figures(self._figures, self._stage)
                self._figures = None
                self.write(self._client.log_artifacts, self.run_id, str(self._stage / "artifacts"))
                self.write(self._client.set_terminated, self.run_id, status)
            except BaseException as err:
                problem = err
                self._try_terminate("FAILED" if status == "FINISHED" else status, err)
            finally:
                self._cleanup()
        self._restore_signals()
        if problem is not None and problem is not exc:
            if isinstance(problem, TrackingError):
                message = str(problem)
            else:
                message = f"tracking on {self.uri} failed closing run {self.run_id}: "
                message += short_message(problem)
            if exc is None:
                raise TrackingError(message) from problem
            print(f"numgrad: {message}", file=sys.stderr)
        if exc is None and self._deferred is not None:
            _raise_signal(self._deferred)

    def _final_metrics(self) -> list[tuple[str, float, int, int]]:
        end = self._end
        ms, step = int(time.time() * 1000), int(end["steps_taken"])
        out = [
            ("final_loss", end["final_loss"], ms, step),
            ("final_accuracy", end["final_accuracy"], ms, step),
            ("steps_taken", float(step), ms, step),
        ]
        W = end["W_final"]
        if W.size <= W_METRICS_MAX:  # sortable in the runs table
            for index, value in np.ndenumerate(W):
                out.append(("W_final." + ".".join(map(str, index)), float(value), ms, step))
        return out

    def _store_reachable(self) -> bool:
        if not self._store_down and self.uri.startswith(("http://", "https://")):
            self._store_down = not server_alive(self.uri)
        return not self._store_down

    def _try_terminate(self, status: str, err: BaseException) -> None:
        if self.run_id is None or self._client is None or not self._store_reachable():
            return
        with contextlib.suppress(Exception):
            why = fit_tag(
                describe_error(err), ""
            )  # numgrad.error keeps the run's own error, if any
            self.write(self._client.set_tag, self.run_id, "numgrad.tracking_error", why)
        with contextlib.suppress(Exception):
            self.write(self._client.set_terminated, self.run_id, status)

    def _cleanup(self) -> None:
        if self.run_id is not None:
            ACTIVE_RUNS.discard(self.run_id)
        if self._csv is not None and not self._csv.closed:
            self._csv.close()
        if self._figures is not None:
            _stop_figure_worker(self._figures)
            self._figures = None
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None

    # ------------------------------------------------------------------- signals

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._signals[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._signals.items():
            signal.signal(signum, handler)
        self._signals = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._defer:
            self._deferred = self._deferred or signum  # delivered when the critical part ends
            return
        _raise_signal(signum)

    @contextlib.contextmanager
    def _deferring(self, deliver: bool = True) -> Iterator[None]:
        """Hold SIGINT/SIGTERM while records move between buffers, so none is lost or doubled."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if deliver and not self._defer and self._deferred is not None and self._signals:
            signum, self._deferred = self._deferred, None
            _raise_signal(signum)


# ------------------------------------------------------------------------- helpers


def _outcome(exc: BaseException | None, end: dict[str, Any] | None) -> tuple[str, dict[str, str]]:
    """Final status and tags for how the run ended."""
    from numgrad.descent import Diverged

    if exc is None:
        return "FINISHED", {"numgrad.stop_reason": str((end or {}).get("stop_reason") or "steps")}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"numgrad.stop_reason": "interrupted"}
    if isinstance(exc, Terminated):
        return "KILLED", {"numgrad.stop_reason": "terminated"}
    if isinstance(exc, Diverged):
        return "FAILED", {
            "numgrad.stop_reason": "diverged",
            "numgrad.diverged.step": str(exc.step),
            "numgrad.diverged.quantity": str(exc.quantity),
            "numgrad.diverged.value": repr(exc.value),
            "numgrad.error": fit_tag(describe_error(exc), ""),
        }
    if isinstance(exc, Exception):
        return "FAILED", {
            "numgrad.stop_reason": "error",
            "numgrad.error": fit_tag(describe_error(exc), ""),
        }
    return "KILLED", {"numgrad.stop_reason": type(exc).__name__}


def _skip_exit_collections() -> None:
    """At interpreter exit, move every object out of the collector's reach (``gc.freeze``).

    With mlflow and SQLAlchemy loaded, the full collections Python runs while tearing
    down modules cost ~0.6 s per process, to free memory the OS takes back anyway.
    Registered once, it runs only at exit, so a long-lived process collects as usual.
    """
    global _EXIT_HOOK
    if not _EXIT_HOOK:
        atexit.register(gc.freeze)
        _EXIT_HOOK = True


def _raise_signal(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _csv_row(r: Any) -> str:
    # float() first: repr of a numpy scalar would be "np.float64(...)", not a number.
    rel = "" if r.grad_rel_error is None else repr(float(r.grad_rel_error))
    return (
        f"{int(r.step)},{float(r.loss)!r},{float(r.grad_norm)!r},{float(r.grad_max_abs)!r},"
        f"{float(r.weight_norm)!r},{float(r.accuracy)!r},{rel},{float(r.seconds)!r}\n"
    )


def _plain(value: Any) -> Any:
    """Plain YAML-safe containers (enums and numpy scalars as their values)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(getattr(value, "value", value))


def fit_tag(text: str, placeholder: str) -> str:
    return (
        text if len(text) <= MAX_TAG_VALUE else (placeholder or text[: MAX_TAG_VALUE - 3] + "...")
    )


def short_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:500] + "...") if len(text) > 500 else (text or type(exc).__name__)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {short_message(exc)}"


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# ----------------------------------------------------------------- figure worker


def _start_figure_worker() -> subprocess.Popen[bytes] | None:
    """Start ``python -m numgrad.plots`` now, so its matplotlib import overlaps ours of mlflow."""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "numgrad.plots"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C on the terminal is the parent's business
        )
    except OSError:
        return None


def _request_figures(worker: subprocess.Popen[bytes] | None, stage: Path) -> None:
    if worker is None:
        return
    try:
        worker.stdin.write(f"{stage}\n".encode())
        worker.stdin.flush()  # communicate() closes it
    except OSError:
        pass  # it died: _collect_figures draws in-process


def _collect_figures(worker: subprocess.Popen[bytes] | None, stage: Path) -> None:
    """Wait for the worker's PNGs; draw them here if it failed. Figures never fail a run."""
    ok = False
    if worker is not None:
        try:
            worker.communicate(timeout=120)
            ok = worker.returncode == 0
        except (subprocess.TimeoutExpired, OSError, ValueError):
            _stop_figure_worker(worker)
    if not ok:
        from numgrad import plots

        try:
            plots.render_run(stage)
        except Exception as exc:
            print(f"numgrad: figures not drawn: {short_message(exc)}", file=sys.stderr)


def _stop_figure_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        with contextlib.suppress(OSError):
            worker.kill()
    with contextlib.suppress(Exception):
        worker.communicate(timeout=10)
