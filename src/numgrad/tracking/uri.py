"""Tracking URIs: which store a run writes to, checked before any run exists.

Nothing here imports mlflow, so that a bad setting costs the user a second, not the
four of an mlflow import, and ``tracking.enabled=false`` never loads it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from numgrad.command import USAGE

DEFAULT_URI = "sqlite:///outputs/mlflow.db"

# Bounded HTTP behaviour (set only where the user has not set them): MLflow's default
# is 7 retries with exponential back-off and a 120 s timeout, minutes per dead call.
# numgrad retries on its own terms (the run's journal keeps every record meanwhile).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow prints its own "View run" link (GenAI view, an extra request); numgrad's
    # summary line names the run's page in the model-training view instead.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
PROBE_ATTEMPTS, PROBE_TIMEOUT = 3, 3.0  # worst case ~10 s, well within 15 s
DB_SCHEMES = ("postgresql", "mysql", "mssql")  # handed to MLflow as they are
SUPPORTED = ("sqlite", "http", "https", "file", *DB_SCHEMES, "databricks")  # "": a path
OFFLINE_HINT = "tracking.offline=true records the run locally for numgrad-sync"
LOCK_TIMEOUT = 120.0  # seconds to wait for another process making or writing the store


class TrackingError(Exception):
    """A tracking setting or the tracking store failed; the message is one line."""

    exit_status = USAGE  # found before any run exists: nothing ran


def resolve_uri(configured: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The tracking URI to use: explicit setting, else ``$MLFLOW_TRACKING_URI``, else the default.

    Examples
    --------
    >>> resolve_uri(None, environ={})
    'sqlite:///outputs/mlflow.db'
    >>> resolve_uri(None, environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    'http://127.0.0.1:5000'
    >>> resolve_uri("sqlite:///x.db", environ={"MLFLOW_TRACKING_URI": "http://h:1"})
    'sqlite:///x.db'
    """
    if configured:
        return configured
    return environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def is_http(uri: str) -> bool:
    """True for a tracking server (``http://`` or ``https://``)."""
    return uri.lower().startswith(("http://", "https://"))


def is_local(uri: str) -> bool:
    """True for a store that only this machine can write: a SQLite file or a file store.

    Examples
    --------
    >>> is_local("sqlite:///outputs/mlflow.db"), is_local("outputs/mlruns")
    (True, True)
    >>> is_local("http://127.0.0.1:5000"), is_local("postgresql://db/mlflow")
    (False, False)
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    return scheme in ("sqlite", "file", "") or len(scheme) == 1  # "C:" is a drive letter


def check_uri(uri: str, *, probe: bool = True, advice: str = "") -> str:
    """Fail fast on a URI that cannot work; return it with SQLite paths made absolute.

    ``probe=False`` contacts nothing and creates nothing (an offline run only records
    which store it is meant for): the URI is only normalised. ``advice`` replaces
    numgrad's own for a server that does not answer (numgrad-sync has its own).
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    base = scheme.split("+")[0]  # postgresql+psycopg2 -> postgresql
    if scheme and len(scheme) == 1:  # a Windows drive letter: a plain path
        base = ""
    if base not in (*SUPPORTED, ""):
        raise TrackingError(
            f"unsupported tracking URI scheme {scheme!r} in {uri!r} "
            "(use sqlite:///path.db, http(s)://host:port or a database URI)"
        )
    if base == "sqlite":
        return _check_sqlite(uri, probe)
    if base in ("http", "https"):
        if probe:
            _probe_server(uri, advice or f"start it, set tracking.uri, or {OFFLINE_HINT}")
        for key, value in HTTP_ENV.items():
            os.environ.setdefault(key, value)
    if base in ("file", ""):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            # MLflow 3 refuses it at the first call; say so before any run starts.
            raise TrackingError(
                f"tracking.uri={uri!r} is a file store, which MLflow 3 keeps in maintenance "
                "mode and refuses: use sqlite:///path.db (or set MLFLOW_ALLOW_FILE_STORE=true)"
            )
        split = urllib.parse.urlsplit(uri)
        path = Path(urllib.request.url2pathname(split.path) if base else uri).absolute()
        _check_writable_dir(path, uri)
        return path.as_uri()
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, absolute; None for any other URI.

    Examples
    --------
    >>> str(sqlite_path("sqlite:////tmp/x/mlflow.db"))
    '/tmp/x/mlflow.db'
    >>> sqlite_path("http://127.0.0.1:5000") is None
    True
    """
    if not uri.lower().startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:") :]
    if not rest.startswith("///"):
        return None
    path = urllib.parse.unquote(rest[3:].split("?", 1)[0])
    return Path(path).absolute() if path and path != ":memory:" else None


def _check_sqlite(uri: str, probe: bool) -> str:
    path = sqlite_path(uri)
    if path is None:
        raise TrackingError(
            f"unsupported SQLite tracking URI {uri!r}: use a file, e.g. sqlite:///outputs/mlflow.db"
        )
    if probe:
        _check_writable_dir(path.parent, uri)
        if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
            raise TrackingError(f"cannot write the MLflow store {path} (tracking.uri={uri})")
        if path.is_file() and path.stat().st_size > 0:
            if Path(f"{path}.lock").exists():  # numgrad's store, maybe being made right now:
                with store_lock(path):  # look once its tables are whole
                    _check_is_mlflow_store(path, uri)
            else:  # never a lock file beside another application's database
                _check_is_mlflow_store(path, uri)
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return "sqlite:///" + urllib.parse.quote(str(path)) + (f"?{query}" if query else "")


@contextlib.contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """The exclusive lock on ``<db>.lock`` under which a SQLite store is made and written."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(f"{db}.lock", timeout=LOCK_TIMEOUT):
            yield
    except Timeout:
        raise TrackingError(f"timed out after {LOCK_TIMEOUT:.0f} s waiting for {db}.lock") from None


def share_writes(db: Path) -> bool:
    """Let several processes write the SQLite store ``db`` side by side: WAL journal mode.

    In SQLite's default (rollback) mode a reader blocks a writer's commit and every wait
    sleeps in steps of milliseconds: two processes uploading into one store went slower
    than one (bench_sender.py). In WAL mode readers never wait and writers only for each
    other's commits. The mode is kept in the file; ``<db>-wal`` and ``<db>-shm`` lie
    beside it while it is open (and after a process was killed: the next one to open it
    takes their contents in). A store on a network file system cannot use it (SQLite's
    documentation). True when the store is in WAL mode now.
    """
    with store_lock(db):
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal"
        finally:
            con.close()


def sqlite_tables(path: Path) -> set[str]:
    """The names in a SQLite file's schema, read without writing a byte (``mode=ro``)."""
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    finally:
        con.close()


def _check_is_mlflow_store(path: Path, uri: str) -> None:
    """Refuse a database that is not an MLflow store: MLflow would add its ~70 tables to it.

    Opened read-only, so the file stays byte for byte as it was.
    """
    try:
        tables = sqlite_tables(path)
    except sqlite3.DatabaseError as exc:
        raise TrackingError(
            f"{path} is not an MLflow store ({exc}): choose another tracking.uri"
        ) from None
    if not tables or {"experiments", "runs", "alembic_version"} <= tables:
        return
    if {"experiments", "runs"} & tables and any(t.startswith("_alembic_tmp_") for t in tables):
        raise TrackingError(
            f"the MLflow store {path} was left half created by an interrupted process "
            "(tables _alembic_tmp_*): move it away and start again"
        )
    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise TrackingError(
        f"{path} is a database of another application (tables: {shown}), not an MLflow "
        "store: numgrad will not add MLflow's tables to it; choose another tracking.uri"
    )


def _check_writable_dir(directory: Path, uri: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # SQLite writes a journal next to the database: the directory must take new files.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TrackingError(
            f"cannot write the MLflow store under {directory}: {reason} (tracking.uri={uri})"
        ) from None


def _probe_server(uri: str, advice: str) -> None:
    """GET ``<uri>/health`` a few times; any HTTP answer counts as reachable."""
    last = ""
    for attempt in range(PROBE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * attempt)
        reason = _health(uri, PROBE_TIMEOUT)
        if reason is None:
            return
        last = reason
    raise TrackingError(
        f"tracking server {uri} is not reachable ({last}) after {PROBE_ATTEMPTS} attempts; {advice}"
    )


def server_alive(uri: str, timeout: float = 2.0) -> bool:
    """One quick ``/health`` request: does the tracking server answer at all?"""
    return _health(uri, timeout) is None


def _health(uri: str, timeout: float) -> str | None:
    """None when the server answers (any HTTP status), else why not."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (e.g. 401/404 behind a proxy): MLflow will say more
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if "CERTIFICATE" in str(reason).upper():
            return None  # TLS set-up is MLflow's business (MLFLOW_TRACKING_INSECURE_TLS ...)
        return str(reason)
