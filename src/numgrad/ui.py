"""``numgrad-ui``: the MLflow UI on the store ``numgrad`` writes to, bound to 127.0.0.1.

Runs ``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000 --workers 1``
where ``<uri>`` is the one a plain ``numgrad`` run in this directory would use
(``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///outputs/mlflow.db``). Any other
argument goes through to ``mlflow ui`` (``--port 5001``, ``--backend-store-uri ...``);
``--host`` is refused: expose a store with ``mlflow server`` deliberately, not by accident.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from numgrad.tracking import resolve_uri, sqlite_path

HOST = "127.0.0.1"
DEFAULT_PORT = "5000"
USAGE = """usage: numgrad-ui [--port PORT] [other `mlflow ui` options]

Start the MLflow UI on http://127.0.0.1:PORT (default 5000) for the store numgrad
writes to from this directory: $MLFLOW_TRACKING_URI if set, else
sqlite:///outputs/mlflow.db. Options other than --host go to `mlflow ui`."""


class UsageError(Exception):
    """A command line ``numgrad-ui`` will not run."""


def _has(args: Sequence[str], *names: str) -> bool:
    """Whether ``args`` holds one of the options ``names`` (``--name v`` or ``--name=v``)."""
    prefixes = tuple(f"{n}=" for n in names if n.startswith("--"))
    return any(a in names or a.startswith(prefixes) for a in args)


def _value(args: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` option in ``args``."""
    found = None
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key in names:
            found = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return found


def ui_argv(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``mlflow ui`` command line for ``numgrad-ui args``.

    Examples
    --------
    >>> ui_argv(["--port", "5001"], environ={})[1:]  # doctest: +NORMALIZE_WHITESPACE
    ['-m', 'mlflow', 'ui', '--backend-store-uri', 'sqlite:///outputs/mlflow.db',
     '--host', '127.0.0.1', '--workers', '1', '--port', '5001']
    """
    args = list(args)
    server_opts = [_value(args, f"--{s}-opts") or "" for s in ("gunicorn", "uvicorn", "waitress")]
    if _has(args, "--host", "-h") or any("host" in o or "bind" in o for o in server_opts):
        raise UsageError(
            "numgrad-ui binds 127.0.0.1 only; use `mlflow server --host ...` to expose a store"
        )
    argv = [sys.executable, "-m", "mlflow", "ui"]
    if not _has(args, "--backend-store-uri"):
        uri = resolve_uri(None, environ)
        if uri.startswith(("http://", "https://")):
            raise UsageError(f"MLFLOW_TRACKING_URI is a tracking server: open {uri} in a browser")
        argv += ["--backend-store-uri", uri]
    argv += ["--host", HOST]
    if not _has(args, "--workers", "-w"):
        argv += ["--workers", "1"]  # one user, one worker: starts faster, uses less memory
    if not _has(args, "--port", "-p"):
        argv += ["--port", DEFAULT_PORT]
    return argv + args


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: replace this process with ``mlflow ui``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _has(args, "--help"):
        print(USAGE)
        return
    try:
        command = ui_argv(args)
    except UsageError as exc:
        print(f"numgrad-ui: error: {exc}", file=sys.stderr)
        sys.exit(2)
    db = sqlite_path(_value(command, "--backend-store-uri") or "")
    if db is not None and not db.exists():
        print(f"numgrad-ui: no store at {db} yet: run numgrad from this directory first",
              file=sys.stderr)  # fmt: skip
    port = _value(command, "--port", "-p") or DEFAULT_PORT
    # MLflow's job runner (GenAI scorers, ~8 more processes) serves nothing numgrad logs.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(f"numgrad-ui: MLflow UI on http://{HOST}:{port} (Ctrl-C stops it)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
