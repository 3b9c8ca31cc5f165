"""The MLflow tracking store as one object: client, file lock, retries, experiments, runs.

A run's sink, a sweep's parent run and ``numgrad-sync`` all talk to MLflow through an
:class:`MlflowStore`, and only through it. It uses ``MlflowClient`` only, never the
fluent API: no process-wide "active run" exists, so a reused worker process (Hydra's
joblib launcher) cannot inherit one, and MLflow's exit hook cannot mark an
interrupted run FINISHED.

SQLite cannot create its tables, or an experiment, from two processes at once: both
happen under a file lock (``<db>.lock``), and creating a new store's tables holds
SIGINT/SIGTERM until it is done (an interrupted migration leaves a store nobody can
open). Writes retry while SQLite says "database is locked".
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from numgrad import signals, speed
from numgrad.tracking.backoff import BUSY_RETRY, lost_a_race
from numgrad.tracking.provenance import orphaned
from numgrad.tracking.records import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_TAGS_PER_BATCH,
    short_message,
)
from numgrad.tracking.uri import (
    HTTP_ENV,
    TrackingError,
    is_http,
    server_alive,
    sqlite_path,
    store_lock,
)

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# MLflow error codes that a retry cannot mend (the request itself is wrong).
_CLIENT_ERRORS = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST",
})  # fmt: skip

Metric = tuple[str, float, int, int]  # key, value, timestamp (ms), step


class MlflowStore:
    """One tracking store (``uri`` as checked by :func:`numgrad.tracking.uri.check_uri`).

    :meth:`open` imports mlflow and connects; every other method needs it first.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.db = sqlite_path(uri)
        self.client: Any = None

    # ------------------------------------------------------------ connecting

    def open(self) -> MlflowStore:
        """Import mlflow and connect; a new SQLite store's tables are made here, once."""
        if self.client is not None:
            return self
        if is_http(self.uri):  # bounded retries: numgrad retries on its own terms
            for key, value in HTTP_ENV.items():
                os.environ.setdefault(key, value)
        try:
            from mlflow.tracking import MlflowClient

            if self.db is not None:
                # Imported outside the lock: only the database work is serialised.
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

                # A new store's "Creating initial MLflow database tables..." is not news.
                logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            with self.lock(), signals.held():
                self.client = MlflowClient(tracking_uri=self.uri)
            speed.freeze_loaded()
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(
                f"cannot open the MLflow store {self.uri}: {short_message(exc)}"
            ) from exc
        return self

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on ``<db>.lock`` for SQLite stores (a no-op for others)."""
        if self.db is None:
            yield
            return
        with store_lock(self.db):
            yield

    def reachable(self, timeout: float = 2.0) -> bool:
        """Does the store answer at all? (A server's ``/health``; a SQLite file's directory.)"""
        if is_http(self.uri):
            return server_alive(self.uri, timeout)
        return self.db is None or self.db.parent.is_dir()

    @staticmethod
    def is_outage(exc: BaseException) -> bool:
        """True for a failure a later retry can mend (unreachable, locked, full, 5xx)."""
        if getattr(exc, "error_code", None) in _CLIENT_ERRORS:
            return False
        from mlflow.exceptions import MlflowException

        module = type(exc).__module__.split(".")[0]
        return isinstance(exc, MlflowException | OSError) or module in (
            "sqlalchemy", "requests", "urllib3", "sqlite3",
        )  # fmt: skip

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client; a store that is busy (a locked SQLite database, error code
        TEMPORARILY_UNAVAILABLE) is tried again, with jittered back-off, up to 10 times.

        MLflow itself waits up to 20 s on a locked SQLite file (``busy_timeout`` on every
        session); what reaches here is the rest: a read upgraded to a write that SQLite
        refuses at once to avoid a deadlock.
        """
        return BUSY_RETRY(fn, *args, **kwargs)

    # ----------------------------------------------------------- experiments

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (tagged for the model-training view) if needed.

        Under the file lock: two processes creating it at once would otherwise leave
        one run in the Default experiment.
        """
        key, kind = EXPERIMENT_KIND
        with self.lock():
            exp = self.call(self.client.get_experiment_by_name, name)
            if exp is None:
                # With SQLite, artifacts go next to the database, not into ./mlartifacts.
                location = (self.db.parent / "mlartifacts").as_uri() if self.db else None
                try:
                    return self.call(
                        self.client.create_experiment, name,
                        artifact_location=location, tags={key: kind},
                    )  # fmt: skip
                except Exception as exc:  # a server's other client was quicker (no lock there)
                    if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                        raise
                exp = self.call(self.client.get_experiment_by_name, name)
        if exp.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment '{name}' is deleted in {self.uri}: restore it "
                "(mlflow experiments restore) or choose another tracking.experiment"
            )
        if exp.tags.get(key) != kind:
            self.call(self.client.set_experiment_tag, exp.experiment_id, key, kind)
        return exp.experiment_id

    def find_experiment(self, name: str) -> str | None:
        """The id of the active experiment ``name``; None if there is none (nothing made)."""
        exp = self.call(self.client.get_experiment_by_name, name)
        return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None

    def reconcile_orphans(self, experiment_id: str) -> None:
        """Mark RUNNING runs of this host whose process is gone KILLED, one line each."""
        host = socket.gethostname()
        if "'" in host:
            return
        where = f"attributes.status = 'RUNNING' and tags.`numgrad.host` = '{host}'"
        for run in self.search_runs([experiment_id], where):
            if not orphaned(run):
                continue
            # The search is a snapshot: its writer may have ended the run and exited since.
            # Once the writer is gone nothing changes the run, so a fresh read settles it.
            run = self.call(self.client.get_run, run.info.run_id)
            if run.info.status != "RUNNING" or not orphaned(run):
                continue
            pid = run.data.tags["numgrad.pid"]
            self.call(self.client.set_tag, run.info.run_id, "numgrad.stop_reason", "orphaned")
            self.call(self.client.set_terminated, run.info.run_id, "KILLED")
            print(f"numgrad: marked run {run.info.run_id} ({run.info.run_name}) KILLED: it was "
                  f"RUNNING but its process {pid} on {host} is gone", file=sys.stderr)  # fmt: skip

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str,
        tags: Mapping[str, str],
        start_time: int | None = None,
    ) -> str:
        run = self.call(
            self.client.create_run, experiment_id,
            start_time=start_time, tags=dict(tags), run_name=run_name,
        )  # fmt: skip
        return run.info.run_id

    def get_run(self, run_id: str) -> Any | None:
        """The run, or None when this store has no such run."""
        try:
            return self.call(self.client.get_run, run_id)
        except Exception as exc:
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def search_runs(self, experiment_ids: Sequence[str], filter_string: str = "") -> list[Any]:
        """Every matching run, all pages."""
        runs: list[Any] = []
        token = None
        while True:
            page = self.call(
                self.client.search_runs, list(experiment_ids), filter_string=filter_string,
                max_results=1000, page_token=token,
            )  # fmt: skip
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def log(
        self,
        run_id: str,
        *,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        entities: Sequence[Any] = (),
    ) -> None:
        """Metrics, params and tags in as few ``log_batch`` calls as MLflow's limits allow
        (each call: at most 100 params, 100 tags, 1,000 metrics, 1,000 in all);
        ``entities``: more metrics, as MLflow ``Metric`` objects (a model's)."""
        from mlflow.entities import Metric as MlflowMetric
        from mlflow.entities import Param, RunTag

        p = [Param(k, v) for k, v in (params or {}).items()]
        t = [RunTag(k, v) for k, v in (tags or {}).items()]
        every = [*metrics, *entities]
        n, i, m = MAX_PARAMS_TAGS_PER_BATCH, 0, 0
        while i < max(len(p), len(t)) or m < len(every):
            ps, ts = p[i : i + n], t[i : i + n]
            room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(ps) - len(ts))
            batch = [MlflowMetric(*x) if isinstance(x, tuple) else x for x in every[m : m + room]]
            self.call(self.client.log_batch, run_id, metrics=batch, params=ps, tags=ts,
                      synchronous=True)  # fmt: skip
            i, m = i + n, m + room

    def log_artifact(self, run_id: str, local: Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path``."""
        if local.is_dir():
            self.call(self.client.log_artifacts, run_id, str(local), artifact_path)
        else:
            self.call(self.client.log_artifact, run_id, str(local), artifact_path)

    def log_dataset(self, run_id: str, dataset: Mapping[str, str], context: str) -> None:
        """A dataset input of the run (the runs table's Dataset column); logging it again
        changes nothing (the store matches datasets by name and digest)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        fields = ("name", "digest", "source_type", "source", "schema", "profile")
        entity = Dataset(**{k: dataset.get(k) for k in fields})
        inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
        # MLflow looks the dataset up, then inserts it: two runs logging the same data at
        # once (a sweep's sender and a run) race on that insert. The file lock serialises
        # writers of a SQLite file; behind a server (SQLite, Postgres, MySQL) the loser gets
        # MLflow's error for the database's integrity error, whatever its text: logging
        # the same input again is harmless, so it is tried once more.
        with self.lock():
            try:
                self.call(self.client.log_inputs, run_id, datasets=inputs)
            except Exception as exc:
                if not lost_a_race(exc):
                    raise
                self.call(self.client.log_inputs, run_id, datasets=inputs)

    def terminate(self, run_id: str, status: str, end_time: int | None = None) -> None:
        self.call(self.client.set_terminated, run_id, status, end_time)

    def artifact_size(self, run_id: str, path: str) -> int | None:
        """The size in bytes of the run's artifact file ``path`` (``weights/W_final.npy``);
        None when the run has no such file."""
        listed = self.call(self.client.list_artifacts, run_id, path.rpartition("/")[0] or None)
        return next((info.file_size for info in listed if info.path == path), None)

    def download(self, run_id: str, path: str, dst: Path) -> Path:
        """Download one artifact of a run into ``dst``; return its local path."""
        return Path(self.call(self.client.download_artifacts, run_id, path, str(dst)))
