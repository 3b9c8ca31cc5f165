"""Where runs are stored: tracking URIs checked before any run exists, the SQLite
file lock, orphaned-run detection and the code's git commit.

Nothing here imports mlflow: :mod:`numgrad.tracking` and the sweep callback use these
to fail fast with one line, and to serialise what SQLite cannot do concurrently
(creating its tables, get-or-create of an experiment).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ACTIVE_RUNS: set[str] = set()  # runs open in this process (orphan check of reused workers)
_jitter = random.Random()  # never the global random state: MLflow names runs from it
DEFAULT_URI = "sqlite:///outputs/mlflow.db"

# Bounded HTTP behaviour (only set when the user has not set them): MLflow's default
# is 7 retries with exponential back-off and a 120 s timeout, minutes per dead call.
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}

PROBE_ATTEMPTS, PROBE_TIMEOUT = 3, 3.0  # worst case ~10 s, well within 15 s

LOCK_TIMEOUT = 120.0

DB_SCHEMES = ("postgresql", "mysql", "mssql")  # handed to MLflow as they are

SUPPORTED = ("sqlite", "http", "https", "file", *DB_SCHEMES, "databricks")  # "": a path


class TrackingError(Exception):
    """A tracking setting or the tracking store failed; the message is one line."""


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


def check_uri(uri: str) -> str:
    """Fail fast on a URI that cannot work; return it with SQLite paths made absolute."""
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
        return _check_sqlite(uri)
    if base in ("http", "https"):
        _probe_server(uri)
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


def _check_sqlite(uri: str) -> str:
    path = sqlite_path(uri)
    if path is None:
        raise TrackingError(
            f"unsupported SQLite tracking URI {uri!r}: use a file, e.g. sqlite:///outputs/mlflow.db"
        )
    _check_writable_dir(path.parent, uri)
    if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
        raise TrackingError(f"cannot write the MLflow store {path} (tracking.uri={uri})")
    query = uri.split("?", 1)[1] if "?" in uri else ""
    return "sqlite:///" + urllib.parse.quote(str(path)) + (f"?{query}" if query else "")


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


def _probe_server(uri: str) -> None:
    """GET ``<uri>/health`` a few times; any HTTP answer counts as reachable."""
    url = uri.rstrip("/") + "/health"
    last = ""
    for attempt in range(PROBE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * attempt)
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT):
                return
        except urllib.error.HTTPError:
            return  # it answered (e.g. 401/404 behind a proxy): MLflow will say more
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if "CERTIFICATE" in str(reason).upper():
                return  # TLS set-up is MLflow's business (MLFLOW_TRACKING_INSECURE_TLS ...)
            last = str(reason)
    raise TrackingError(
        f"tracking server {uri} is not reachable ({last}) after {PROBE_ATTEMPTS} attempts; "
        "start it or set tracking.uri"
    )


def server_alive(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def git_commit(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start``, read from ``.git``.

    Stops at ``site-packages`` (an installed copy is not the checkout around it);
    returns None when there is no repository or no commit yet. Never runs ``git``.
    """
    for directory in (start, *start.parents):
        if directory.name in ("site-packages", "dist-packages"):
            return None
        dot_git = directory / ".git"
        try:
            if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
                text = dot_git.read_text().strip()
                if not text.startswith("gitdir:"):
                    return None
                dot_git = (directory / text[len("gitdir:") :].strip()).resolve()
            if dot_git.is_dir():
                return _read_head(dot_git)
        except OSError:
            return None
    return None


def _read_head(git_dir: Path) -> str | None:
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
    ref = head[len("ref:") :].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        if (base / ref).is_file():
            sha = (base / ref).read_text().strip()
            return sha if re.fullmatch(r"[0-9a-f]{40,64}", sha) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    return None


def orphaned(run_id: str, pid: int, start_ms: int | None) -> bool:
    """True when the process that owned a RUNNING run is gone (or its pid was reused)."""
    if pid == os.getpid():
        return run_id not in ACTIVE_RUNS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = _process_start(pid)
    return started is not None and start_ms is not None and started > start_ms / 1000 + 2


def _process_start(pid: int) -> float | None:
    """Start time of a process (epoch seconds) from /proc; None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


@contextlib.contextmanager
def file_lock(db: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``<db>.lock`` (no-op for non-SQLite stores)."""
    if db is None:
        yield
        return
    try:
        import fcntl  # POSIX only
    except ImportError:  # pragma: no cover - Windows: MLflow's own behaviour
        yield
        return
    with open(f"{db}.lock", "a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(
                        f"timed out after {LOCK_TIMEOUT:.0f} s waiting for {db}.lock"
                    ) from None
                time.sleep(0.02 + 0.03 * _jitter.random())
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
