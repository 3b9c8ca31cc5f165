"""Hydra callback for sweeps: one parent MLflow run, every job a child, a sweep summary.

``conf/config.yaml`` registers :class:`SweepCallback` under ``hydra.callbacks``, so every
``numgrad -m ...`` uses it, with any sweeper (basic, Optuna) and launcher (basic,
joblib, Ray):

- ``on_multirun_start`` (main process, before the sweeper and launcher exist) opens the
  parent run, creating and migrating the store first, once, under the same file lock as
  :mod:`numgrad.tracking`, so parallel workers never race on a new SQLite file. Its id
  goes to the jobs in ``$NUMGRAD_PARENT_RUN_ID``: set in this process (the basic
  launcher's jobs run here, joblib's loky workers are started later and inherit it)
  and, for the Ray launcher, in ``hydra.launcher.ray.init.runtime_env.env_vars`` of the
  config received here, which is the object Hydra instantiates the launcher from
  (``hydra/_internal/hydra.py`` ``multirun()``).
- ``on_job_end`` (wherever the job ran) records a job that failed with an unexpected
  exception in ``numgrad_job.json``; ``numgrad.cli`` writes it for the others.
- ``on_multirun_end`` calls :func:`end_sweep`: one row per job (from the job dirs and the
  children in the store) to ``sweep_summary.csv``, figures, the parent's final status,
  one line per failed job. Hydra does not call it when the sweeper raises (the basic
  sweeper re-raises a job's unexpected exception, Ctrl-C, SIGTERM), so ``numgrad.cli``
  calls :func:`end_sweep` from its exception paths too; it runs once.

Nothing here imports mlflow or matplotlib until a sweep needs them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from numgrad import store as stores
from numgrad import tracking
from numgrad.sweep_plots import finite_number, number

SUMMARY_FILE = "sweep_summary.csv"
FIGURES_DIR = "sweep_figures"  # in the sweep dir; "figures/" in the parent run
JOB_STATUS_FILE = "numgrad_job.json"  # written by numgrad.cli (same name there)
SUMMARY_FIELDS = (
    "job", "overrides", "status", "final_loss", "final_accuracy", "steps_taken",
    "grad_rel_error", "run_id",
)  # fmt: skip
GRACE_SECONDS = 10.0  # after Ctrl-C, how long live children get to end their runs
REMOTE_LAUNCHERS = ("ray",)  # launchers whose jobs may run on other machines


@dataclass
class SweepOutcome:
    """How a sweep ended: the parent's status and one row per job."""

    status: str
    rows: list[dict[str, Any]]
    parent_run_id: str | None = None
    summary: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "FINISHED"]


_SWEEP: _Sweep | None = None  # the sweep this process runs, between start and end
_LAST: SweepOutcome | None = None


class SweepCallback(Callback):
    """Parent run, child links and sweep summary for ``numgrad -m``.

    Stateless itself (Hydra pickles it to every worker): the sweep lives in this module
    in the main process.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _SWEEP, _LAST
        if _SWEEP is not None:  # an earlier sweep in this process never ended
            end_sweep(RuntimeError("a new sweep started"))
        _LAST = None
        sweep = _Sweep(config)
        try:
            sweep.start(config)
        except BaseException as exc:
            if sweep.parent_id is not None:
                sweep.end(exc)
            raise
        _SWEEP = sweep

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        end_sweep()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if "MULTIRUN" not in str(OmegaConf.select(config, "hydra.mode")):
            return
        if job_return.status != JobStatus.FAILED:
            return
        output_dir = Path(str(config.hydra.runtime.output_dir))
        if (output_dir / JOB_STATUS_FILE).exists():
            return
        from numgrad.cli import write_job_status

        # The public return_value property re-raises the job's exception and writes a
        # line to stderr; here we only want to record it.
        exc = job_return._return_value
        with contextlib.suppress(OSError):
            write_job_status(
                output_dir, list(job_return.overrides or []), "FAILED",
                error=f"{type(exc).__name__}: {tracking.short_message(exc)}",
                job=int(config.hydra.job.num), pid=os.getpid(),
            )  # fmt: skip


def end_sweep(exc: BaseException | None = None) -> SweepOutcome | None:
    """End this process's sweep, if one is open; return how it ended (also later).

    ``exc`` is what stopped the sweep, if anything: KeyboardInterrupt or
    :class:`numgrad.tracking.Terminated` make the parent KILLED, anything else FAILED;
    without it the parent is FINISHED when every job finished, else FAILED. Safe to call
    any number of times; never raises (problems are printed as one line).
    """
    global _SWEEP, _LAST
    sweep, _SWEEP = _SWEEP, None
    if sweep is not None:
        _LAST = sweep.end(exc)
    return _LAST


def last_outcome() -> SweepOutcome | None:
    """The outcome of the last sweep this process ended, None if none."""
    return _LAST


# ---------------------------------------------------------------------- the sweep


class _Sweep:
    """One multirun, seen from the main process."""

    def __init__(self, config: DictConfig) -> None:
        self.started = time.time()
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.overrides = [str(o) for o in config.hydra.overrides.task]
        params = OmegaConf.select(config, "hydra.sweeper.params")
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.launcher = _short_target(OmegaConf.select(config, "hydra.launcher._target_"))
        self.sweeper = _short_target(OmegaConf.select(config, "hydra.sweeper._target_"))
        self.tracking_cfg = config.get("tracking")
        self.uri: str | None = None
        self.experiment = str(OmegaConf.select(config, "tracking.experiment") or "numgrad")
        self.parent_id: str | None = None
        self.name = _sweep_name(
            self.overrides, self.params, OmegaConf.select(config, "tracking.run_name")
        )
        self._client: Any = None
        self._store: Any = None  # a tracking.MlflowSink used as a handle: lock, retries, orphans
        self._env_before: str | None = None
        self._env_set = False
        self._signals: dict[int, Any] = {}
        self._stopping = False

    # ------------------------------------------------------------------- start

    def start(self, config: DictConfig) -> None:
        enabled = bool(OmegaConf.select(config, "tracking.enabled", default=True))
        if enabled:
            try:
                self._open_parent()
            except tracking.TrackingError as exc:
                # Every job would fail the same way (a dead server costs ~10 s each): stop now.
                print(f"numgrad: error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            self._export_parent(config)
        self._warn_remote_store(config, enabled)
        if threading.current_thread() is threading.main_thread():
            # SIGTERM between jobs would kill the process with the parent RUNNING: raise
            # Terminated instead, so the parent ends KILLED (the job sinks do the same).
            self._signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_signal)
            if "joblib" in self.launcher:
                # On Ctrl-C joblib SIGKILLs its workers at once; first let them end their
                # runs (KILLED, history uploaded). Not for in-process jobs: their sink
                # handles SIGINT itself, and only while Python's default handler is set.
                self._signals[signal.SIGINT] = signal.signal(signal.SIGINT, _on_signal)

    def _open_parent(self) -> None:
        uri = stores.check_uri(stores.resolve_uri(OmegaConf.select(self.tracking_cfg, "uri")))
        store = tracking.MlflowSink(
            uri=uri, experiment=self.experiment, run_name=self.name, config={},
            overrides=self.overrides, output_dir=None, planned_steps=0,
        )  # fmt: skip
        from mlflow.tracking import MlflowClient

        db = tracking.sqlite_path(uri)
        if db is not None:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - outside the lock
        client = MlflowClient(tracking_uri=uri)
        try:
            # Creating (and migrating) a new store happens here, once, before any job.
            with stores.file_lock(db):
                store.experiment_id = store.get_or_create_experiment(client, db)
                store.reconcile_orphans(client)
            tags = self._parent_tags()
            run = store.write(client.create_run, store.experiment_id, tags=tags, run_name=self.name)
        except tracking.TrackingError:
            raise
        except Exception as exc:
            raise tracking.TrackingError(
                f"cannot open the sweep's parent run on {uri}: {tracking.short_message(exc)}"
            ) from exc
        self.uri, self._client, self._store = uri, client, store
        self.parent_id = run.info.run_id
        # Basic-launcher jobs run in this process: the orphan check must see the parent alive.
        stores.ACTIVE_RUNS.add(self.parent_id)

    def _parent_tags(self) -> dict[str, str]:
        fit = tracking.fit_tag
        tags = {
            "mlflow.user": tracking.user_name(),
            "mlflow.source.name": "numgrad",
            "mlflow.source.type": "LOCAL",
            "numgrad.kind": "sweep",
            "numgrad.sweep.dir": fit(str(self.sweep_dir), ""),
            "numgrad.sweep.overrides": fit(" ".join(self.overrides), ""),
            "numgrad.sweep.sweeper": self.sweeper,
            "numgrad.sweep.launcher": self.launcher,
            "numgrad.command": fit(shlex.join(["numgrad", *sys.argv[1:]]), ""),
            "numgrad.host": socket.gethostname(),
            "numgrad.pid": str(os.getpid()),
        }
        if self.params:
            tags["numgrad.sweep.params"] = fit(
                " ".join(f"{k}={v}" for k, v in self.params.items()), ""
            )
        commit = tracking.git_commit(Path(tracking.__file__).resolve().parent)
        if commit:
            tags["numgrad.git_commit"] = tags["mlflow.source.git.commit"] = commit
        return tags

    def _export_parent(self, config: DictConfig) -> None:
        """Hand the parent's id (and the store) to every job, wherever it runs."""
        assert self.parent_id is not None and self.uri is not None
        self._env_before = os.environ.get(tracking.PARENT_RUN_ENV)
        os.environ[tracking.PARENT_RUN_ENV] = self.parent_id
        self._env_set = True
        init = OmegaConf.select(config, "hydra.launcher.ray.init")
        if isinstance(init, DictConfig):
            env = {tracking.PARENT_RUN_ENV: self.parent_id}
            if not OmegaConf.select(self.tracking_cfg, "uri"):
                # The store this process resolved (absolute), not the worker's own default.
                env["MLFLOW_TRACKING_URI"] = self.uri
            with read_write(config.hydra), open_dict(config.hydra):
                runtime_env = init.get("runtime_env") or {}
                runtime_env = (
                    OmegaConf.to_container(runtime_env)
                    if isinstance(runtime_env, DictConfig)
                    else dict(runtime_env)
                )
                runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
                init["runtime_env"] = runtime_env

    def _warn_remote_store(self, config: DictConfig, enabled: bool) -> None:
        if not enabled or not any(name in self.launcher.lower() for name in REMOTE_LAUNCHERS):
            return
        uri = self.uri or stores.resolve_uri(OmegaConf.select(self.tracking_cfg, "uri"))
        if uri.lower().startswith(("sqlite:", "file:")) or "://" not in uri:
            print(
                f"numgrad: warning: hydra/launcher={self.launcher} with the local store {uri}: "
                "jobs on other machines cannot reach it; use a tracking server "
                "(tracking.uri=http://host:5000)",
                file=sys.stderr,
            )

    # --------------------------------------------------------------------- end

    def end(self, exc: BaseException | None) -> SweepOutcome:
        interrupted = isinstance(exc, KeyboardInterrupt | tracking.Terminated)
        outcome = SweepOutcome(status="FAILED", rows=[], parent_run_id=self.parent_id)
        try:
            children = self._children(wait=interrupted) if self._client is not None else []
            self._close_lost_children(children, outcome)
            outcome.rows = _rows(self.sweep_dir, self.started, children, interrupted)
            if interrupted:
                outcome.status = "KILLED"
            elif exc is not None or outcome.failed:
                outcome.status = "FAILED"
            else:
                outcome.status = "FINISHED"
            outcome.summary = self._write_summary(outcome)
            if self._client is not None:
                self._log_parent(outcome, exc)
        except BaseException as err:
            outcome.status = "KILLED" if interrupted or not isinstance(err, Exception) else "FAILED"
            outcome.notes.append(f"sweep summary incomplete: {tracking.describe_error(err)}")
        finally:
            self._terminate(outcome.status)
            self._restore()
        _report(outcome, self, exc)
        return outcome

    def _children(self, wait: bool) -> list[Any]:
        """The parent's child runs; after Ctrl-C, give live ones time to end first."""
        deadline = time.monotonic() + (GRACE_SECONDS if wait else 0.0)
        while True:
            runs = self._search_children()
            live = [r for r in runs if r.info.status == "RUNNING" and not _gone(r)]
            if not live or time.monotonic() >= deadline:
                return runs
            time.sleep(0.5)

    def _search_children(self) -> list[Any]:
        store, client = self._store, self._client
        experiments = [store.experiment_id]
        if "tracking.experiment" in {*_params(self.overrides), *self.params}:
            # Jobs choose their own experiment: look for the children everywhere.
            found = store.write(client.search_experiments, max_results=1000)
            experiments = [e.experiment_id for e in found] or experiments
        runs: list[Any] = []
        token = None
        while True:
            page = store.write(
                client.search_runs, experiments,
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
                max_results=1000, page_token=token,
            )  # fmt: skip
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _close_lost_children(self, children: list[Any], outcome: SweepOutcome) -> None:
        """No child stays RUNNING once its process is gone (a killed worker, Ctrl-C)."""
        for run in children:
            if run.info.status != "RUNNING":
                continue
            if not _gone(run):
                outcome.notes.append(
                    f"run {run.info.run_id} ({run.info.run_name}) is still RUNNING on "
                    f"{run.data.tags.get('numgrad.host', '?')}"
                )
                continue
            with contextlib.suppress(Exception):
                self._store.write(
                    self._client.set_tag, run.info.run_id, "numgrad.stop_reason", "orphaned"
                )
                self._store.write(self._client.set_terminated, run.info.run_id, "KILLED")
                run.info._status = "KILLED"  # our copy, for the summary: no second query

    def _write_summary(self, outcome: SweepOutcome) -> Path | None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = write_summary(outcome.rows, self.sweep_dir / SUMMARY_FILE)
        if outcome.rows:
            try:
                from numgrad import sweep_plots

                sweep_plots.render_sweep(outcome.rows, self.sweep_dir / FIGURES_DIR)
            except Exception as exc:
                outcome.notes.append(f"sweep figures not drawn: {tracking.describe_error(exc)}")
        return path

    def _log_parent(self, outcome: SweepOutcome, exc: BaseException | None) -> None:
        from mlflow.entities import Metric, RunTag

        failed = outcome.failed
        fit = tracking.fit_tag
        tags = {
            "numgrad.sweep.jobs": str(len(outcome.rows)),
            "numgrad.sweep.finished_count": str(len(outcome.rows) - len(failed)),
            "numgrad.sweep.failed_count": str(len(failed)),
            "mlflow.note.content": fit(_note(outcome, self), ""),
        }
        if failed:
            tags["numgrad.sweep.failed"] = fit(
                "; ".join(r["overrides"] or "(none)" for r in failed), ""
            )
        if exc is not None:
            tags["numgrad.error"] = fit(tracking.describe_error(exc), "")
        now = int(time.time() * 1000)
        metrics = [
            Metric("sweep_jobs", float(len(outcome.rows)), now, 0),
            Metric("sweep_failed", float(len(failed)), now, 0),
        ]
        losses = [
            r["final_loss"]
            for r in outcome.rows
            if finite_number(r["final_loss"]) and r["status"] == "FINISHED"
        ]
        if losses:
            metrics.append(Metric("best_final_loss", min(losses), now, 0))
        self._store.write(
            self._client.log_batch, self.parent_id,
            tags=[RunTag(k, v) for k, v in tags.items()], metrics=metrics, synchronous=True,
        )  # fmt: skip
        log = self._client.log_artifact
        if outcome.summary is not None:
            self._store.write(log, self.parent_id, str(outcome.summary))
        for extra in ("multirun.yaml", "optimization_results.yaml"):
            if (self.sweep_dir / extra).is_file():
                self._store.write(log, self.parent_id, str(self.sweep_dir / extra))
        figures = self.sweep_dir / FIGURES_DIR
        if figures.is_dir() and any(figures.iterdir()):
            self._store.write(self._client.log_artifacts, self.parent_id, str(figures), "figures")

    def _terminate(self, status: str) -> None:
        if self.parent_id is None or self._client is None:
            return
        try:
            self._store.write(self._client.set_terminated, self.parent_id, status)
        except Exception as exc:
            print(
                f"numgrad: could not end the sweep's parent run {self.parent_id} on {self.uri}: "
                f"{tracking.short_message(exc)}",
                file=sys.stderr,
            )
        stores.ACTIVE_RUNS.discard(self.parent_id)

    def _restore(self) -> None:
        if self._env_set:
            if self._env_before is None:
                os.environ.pop(tracking.PARENT_RUN_ENV, None)
            else:
                os.environ[tracking.PARENT_RUN_ENV] = self._env_before
            self._env_set = False
        for signum, handler in self._signals.items():
            signal.signal(signum, handler)
        self._signals = {}

    def stop_workers(self) -> None:
        """Stop this process's pool workers, letting each end its run first (SIGTERM).

        A worker in a run gets one SIGTERM per run: its sink ends the run KILLED, with
        the history so far. A worker without a run (idle, or its run just ended) gets
        SIGTERM until it exits, so it cannot start a queued job. Waits at most
        ``GRACE_SECONDS``; joblib kills what is left (SIGKILL) and :meth:`end` closes
        runs left RUNNING. Ray's workers are not this process's children: their runs
        are left to Ray and to the next ``numgrad`` start's orphan check.
        """
        if self._stopping:
            return
        self._stopping = True
        signalled: set[tuple[int, str]] = set()
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            workers = _pool_workers()
            if not workers:
                return
            running = self._running_by_pid()
            for pid in workers:
                run_id = running.get(pid)
                if run_id is None or (pid, run_id) not in signalled:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGTERM)
                    if run_id is not None:
                        signalled.add((pid, run_id))
            time.sleep(0.25)

    def _running_by_pid(self) -> dict[int, str]:
        """``{pid: run_id}`` of this sweep's RUNNING children (empty without a store)."""
        if self._client is None:
            return {}
        try:
            runs = self._search_children()
        except Exception:  # stopping must not depend on the store
            return {}
        return {
            int(r.data.tags["numgrad.pid"]): r.info.run_id
            for r in runs
            if r.info.status == "RUNNING" and r.data.tags.get("numgrad.pid", "").isdigit()
        }


# -------------------------------------------------------------------- the rows


def _rows(
    sweep_dir: Path, started: float, children: Sequence[Any], interrupted: bool
) -> list[dict[str, Any]]:
    """One row per job, from its ``numgrad_job.json`` / ``.hydra`` dir and its child run.

    A job that failed before its run existed (an invalid value) has only its dir; a
    job on another machine only its run. Files older than this sweep are ignored (a
    reused ``hydra.sweep.dir``).
    """
    rows: dict[str, dict[str, Any]] = {}
    recent = started - 1.0
    if sweep_dir.is_dir():
        for path in sweep_dir.rglob("overrides.yaml"):
            if path.parent.name != ".hydra" or path.stat().st_mtime < recent:
                continue
            job_dir = path.parent.parent
            row = rows.setdefault(_key(job_dir), _empty_row(job_dir))
            row["overrides_list"] = _read_overrides(path)
        for path in sweep_dir.rglob(JOB_STATUS_FILE):
            if path.stat().st_mtime < recent:
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            row = rows.setdefault(_key(path.parent), _empty_row(path.parent))
            row["overrides_list"] = list(record.get("overrides") or row["overrides_list"])
            row["status"] = record.get("status")
            row["error"] = record.get("error") or ""
            row["final_loss"] = number(record.get("final_loss"))
            if record.get("job") is not None:
                row["job"] = int(record["job"])
    for run in children:
        tags, metrics = run.data.tags, run.data.metrics
        where = tags.get("numgrad.output_dir")
        row = rows.setdefault(_key(Path(where)) if where else run.info.run_id, _empty_row(None))
        row["run_id"] = run.info.run_id
        if not row["overrides_list"]:
            row["overrides_list"] = tags.get("numgrad.overrides", "").split()
        if row["status"] is None:  # the job's own record wins; else the run's status
            row["status"] = run.info.status
        if not row["error"]:
            row["error"] = tags.get("numgrad.error", "")
        for key in ("final_loss", "final_accuracy", "steps_taken", "grad_rel_error"):
            if key in metrics:
                row[key] = float(metrics[key])
        if row["output_dir"] is None and where:
            row["output_dir"] = where
    out = []
    for row in rows.values():
        if row["status"] is None:  # started, never reported: stopped by Ctrl-C or a crash
            row["status"] = "KILLED" if interrupted else "FAILED"
        if row["job"] is None and row["output_dir"] and Path(row["output_dir"]).name.isdigit():
            row["job"] = int(Path(row["output_dir"]).name)
        if row["steps_taken"] is not None:
            row["steps_taken"] = int(row["steps_taken"])
        row["overrides"] = " ".join(row.pop("overrides_list"))
        row["params"] = _params(row["overrides"].split())
        out.append(row)
    out.sort(key=lambda r: (r["job"] is None, r["job"] or 0, r["overrides"]))
    return out


def _empty_row(job_dir: Path | None) -> dict[str, Any]:
    return {
        "job": int(job_dir.name) if job_dir is not None and job_dir.name.isdigit() else None,
        "overrides_list": [], "status": None, "final_loss": None, "final_accuracy": None,
        "steps_taken": None, "grad_rel_error": None, "run_id": "", "error": "",
        "output_dir": str(job_dir) if job_dir is not None else None,
    }  # fmt: skip


def _key(path: Path) -> str:
    return os.path.normpath(os.path.realpath(path))


def _read_overrides(path: Path) -> list[str]:
    import yaml

    try:
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return []


def _params(overrides: Sequence[str]) -> dict[str, str]:
    """``{"optimizer.lr": "0.1"}`` from ``["optimizer.lr=0.1"]``; hydra.* left out."""
    out = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if sep and not (key == "hydra" or key.startswith(("hydra.", "hydra/"))):
            out[key] = value
    return out


def write_summary(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``sweep_summary.csv``: one row per job, a column per swept parameter, floats exact.

    Examples
    --------
    >>> import tempfile
    >>> rows = [{"job": 0, "overrides": "optimizer.lr=0.1", "status": "FINISHED",
    ...          "final_loss": 0.25, "final_accuracy": 1.0, "steps_taken": 3,
    ...          "grad_rel_error": None, "run_id": "abc", "error": "",
    ...          "output_dir": "/x/0", "params": {"optimizer.lr": "0.1"}}]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(write_summary(rows, Path(d) / "s.csv").read_text().splitlines()[1])
    0,optimizer.lr=0.1,FINISHED,0.25,1.0,3,,abc,0.1,,/x/0
    """
    keys = sorted({k for row in rows for k in row["params"]})
    fields = [*SUMMARY_FIELDS, *keys, "error", "output_dir"]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for row in rows:
            cells = [_cell(row.get(k)) for k in (*SUMMARY_FIELDS,)]
            cells += [row["params"].get(k, "") for k in keys]
            cells += [row.get("error") or "", row.get("output_dir") or ""]
            writer.writerow(cells)
    tmp.replace(path)
    return path


def read_summary(path: Path | str) -> list[dict[str, str]]:
    """The rows of a ``sweep_summary.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ------------------------------------------------------------------- reporting


def _report(outcome: SweepOutcome, sweep: _Sweep, exc: BaseException | None) -> None:
    """One line for the sweep, one per failed job (every one, not only the first)."""
    n, failed = len(outcome.rows), outcome.failed
    where = (
        f"parent run {sweep.parent_id} ({sweep.name}) on {sweep.uri}; " if sweep.parent_id else ""
    )
    summary = f"summary {outcome.summary}" if outcome.summary else "no summary"
    for note in outcome.notes:
        print(f"numgrad: {note}", file=sys.stderr)
    if not failed and outcome.status == "FINISHED":
        print(f"numgrad: sweep of {n} jobs FINISHED; {where}{summary}")
        return
    print(
        f"numgrad: sweep {outcome.status}: {len(failed)} of {n} jobs did not finish; "
        f"{where}{summary}",
        file=sys.stderr,
    )
    for row in failed:
        job = "?" if row["job"] is None else row["job"]
        error = f": {row['error']}" if row["error"] else ""
        print(f"numgrad:   job {job} ({row['overrides']}) {row['status']}{error}", file=sys.stderr)


def _note(outcome: SweepOutcome, sweep: _Sweep) -> str:
    """The parent run's description in the MLflow UI (Markdown)."""
    lines = [
        f"Sweep of {len(outcome.rows)} jobs ({len(outcome.failed)} did not finish): "
        f"`{shlex.join(['numgrad', *sys.argv[1:]])}`",
        "",
        f"Sweep dir: `{sweep.sweep_dir}`. One row per job in `{SUMMARY_FILE}`; "
        "figures in `figures/`.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------- helpers


def _on_signal(signum: int, frame: Any) -> None:
    sweep = _SWEEP
    if sweep is not None:
        sweep.stop_workers()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise tracking.Terminated(signum)


def _pool_workers() -> list[int]:
    """The pids of this process's live loky (joblib) workers; Linux /proc only."""
    me, found = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            if (
                int(ppid) == me
                and state not in "ZX"
                and b"popen_loky" in (entry / "cmdline").read_bytes()
            ):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _gone(run: Any) -> bool:
    """True when a RUNNING run's process on this host is gone (never for other hosts)."""
    tags = run.data.tags
    pid = tags.get("numgrad.pid", "")
    if tags.get("numgrad.host") != socket.gethostname() or not pid.isdigit():
        return False
    return stores.orphaned(run.info.run_id, int(pid), run.info.start_time)


def _short_target(target: Any) -> str:
    """``hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher`` -> ``joblib``."""
    text = str(target or "")
    name = text.rsplit(".", 1)[-1]
    for suffix in ("Launcher", "Sweeper"):
        name = name.removesuffix(suffix)
    return name.lower() or "unknown"


def _sweep_name(overrides: Sequence[str], params: Mapping[str, str], run_name: Any) -> str:
    if run_name:
        return f"{run_name} (sweep)"
    given = set(_params(overrides))  # a command-line override replaces the preset's param
    parts = [tracking.run_name_from([o]) for o in overrides]
    parts += [tracking.run_name_from([f"{k}={v}"]) for k, v in params.items() if k not in given]
    parts = [p for p in parts if p != "default"]
    name = "sweep " + (" ".join(parts) or "default")
    return name if len(name) <= 250 else name[:247] + "..."
