"""``numgrad-ui``: the MLflow UI on the store ``numgrad`` writes to, bound to 127.0.0.1.

Runs ``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000 --workers 1``,
where ``<uri>`` is the store a plain ``numgrad`` run in this directory uses
(``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///outputs/mlflow.db``). Other
options go through to ``mlflow ui``; ``--host`` is refused: expose a store with
``mlflow server`` deliberately, not by accident.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from numgrad.tracking.uri import is_http, resolve_uri, sqlite_path

HOST = "127.0.0.1"
DEFAULT_PORT = 5000


class UsageError(Exception):
    """A command line ``numgrad-ui`` will not run."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numgrad-ui",
        add_help=False,  # -h is mlflow ui's --host, which numgrad-ui refuses
        description="Start the MLflow UI on http://127.0.0.1:PORT for the store numgrad "
        "writes to from this directory ($MLFLOW_TRACKING_URI if set, else "
        "sqlite:///outputs/mlflow.db). Other options go to `mlflow ui`.",
    )
    p.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    p.add_argument("--backend-store-uri", help="the store to show (default: numgrad's)")
    p.add_argument("-w", "--workers", type=int, default=1, help="default: %(default)s")
    p.add_argument("-h", "--host", help=argparse.SUPPRESS)  # refused, with the reason
    p.add_argument("--help", action="help", help="show this help and exit")
    return p


def ui_argv(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``mlflow ui`` command line for ``numgrad-ui args``.

    Examples
    --------
    >>> ui_argv(["--port", "5001"], environ={})[1:]  # doctest: +NORMALIZE_WHITESPACE
    ['-m', 'mlflow', 'ui', '--backend-store-uri', 'sqlite:///outputs/mlflow.db',
     '--host', '127.0.0.1', '--port', '5001', '--workers', '1']
    """
    options, rest = parser().parse_known_args(list(args))
    if options.host is not None or any("host" in o or "bind" in o for o in _server_opts(rest)):
        raise UsageError(
            "numgrad-ui binds 127.0.0.1 only; use `mlflow server --host ...` to expose a store"
        )
    uri = options.backend_store_uri or resolve_uri(None, environ)
    if is_http(uri):
        raise UsageError(f"MLFLOW_TRACKING_URI is a tracking server: open {uri} in a browser")
    return [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", HOST,
        "--port", str(options.port), "--workers", str(options.workers), *rest,
    ]  # fmt: skip


def _server_opts(args: Sequence[str]) -> list[str]:
    """The values of ``--gunicorn-opts``/``--uvicorn-opts``/``--waitress-opts`` in ``args``."""
    found = []
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key in ("--gunicorn-opts", "--uvicorn-opts", "--waitress-opts"):
            found.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: replace this process with ``mlflow ui``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = ui_argv(args)
    except UsageError as exc:
        parser().error(str(exc))  # prints usage and the reason, exit 2
    db = sqlite_path(command[command.index("--backend-store-uri") + 1])
    if db is not None and not db.exists():
        print(f"numgrad-ui: no store at {db} yet: run numgrad from this directory first",
              file=sys.stderr)  # fmt: skip
    port = command[command.index("--port") + 1]
    # MLflow's job runner (GenAI scorers, ~8 more processes) serves nothing numgrad logs.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(f"numgrad-ui: MLflow UI on http://{HOST}:{port} (Ctrl-C stops it)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
