"""``numgrad-ui``: the MLflow UI on numgrad's store, on 127.0.0.1, in the model-training view.

Starts ``mlflow ui --backend-store-uri <uri> --host 127.0.0.1 --port 5000 --workers 1``
as a child process in its own process group (the server's workers go with it), where
``<uri>`` is the store a plain ``numgrad`` run in this directory uses
(``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///outputs/mlflow.db``). Then it prints
the URL of the experiment's runs in MLflow's model-training view (the UI's own default
is its GenAI view, which shows no runs) and, with ``--open``, opens it in a browser
(Python's ``webbrowser``: ``$BROWSER`` chooses) once the server answers. Ctrl-C or
SIGTERM stop the server's whole group, then numgrad-ui ends with one line and 130 or 143
(:mod:`numgrad.command`); if numgrad-ui is killed outright, the kernel stops the server.
Other options go through to ``mlflow ui``; ``--host`` is refused: expose a store with
``mlflow server`` deliberately, not by accident.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from numgrad import command, signals
from numgrad.command import UsageError
from numgrad.processes import ending_with_this_process, listening
from numgrad.tracking.pages import DEFAULT_PORT, HOST, experiment_page, local_url
from numgrad.tracking.uri import is_http, resolve_uri, server_alive, sqlite_path

EXPERIMENT = "numgrad"  # tracking.experiment's default
EXPOSED = "numgrad-ui binds 127.0.0.1 only; use `mlflow server --host ...` to expose a store"
START_TIMEOUT = 180.0  # seconds to wait for the server to answer
LOOPBACK = {"127.0.0.1", "::1"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numgrad-ui",
        add_help=False,  # -h is mlflow ui's --host, which numgrad-ui refuses
        description="Start the MLflow UI on http://127.0.0.1:PORT for the store numgrad "
        "writes to from this directory ($MLFLOW_TRACKING_URI if set, else "
        "sqlite:///outputs/mlflow.db) and print the experiment's page in the model-training "
        "view. Other options go to `mlflow ui`.",
    )
    p.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    p.add_argument("--backend-store-uri", help="the store to show (default: numgrad's)")
    p.add_argument("-w", "--workers", type=int, default=1, help="default: %(default)s")
    p.add_argument("--experiment", default=EXPERIMENT, help="whose page (default: %(default)s)")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.add_argument("-h", "--host", help=argparse.SUPPRESS)  # refused, with the reason
    p.add_argument("--help", action="help", help="show this help and exit")
    return p


def ui_argv(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``mlflow ui`` command line for ``numgrad-ui args``.

    Examples
    --------
    >>> ui_argv(["--port", "5001", "--open"], environ={})[1:]  # doctest: +NORMALIZE_WHITESPACE
    ['-m', 'mlflow', 'ui', '--backend-store-uri', 'sqlite:///outputs/mlflow.db',
     '--host', '127.0.0.1', '--port', '5001', '--workers', '1']
    """
    options, rest = parser().parse_known_args(list(args))
    if options.host is not None or any(_binds(o) for o in _server_opts(rest)):
        raise UsageError(EXPOSED)
    uri = options.backend_store_uri or resolve_uri(None, environ)
    if is_http(uri):
        raise UsageError(f"MLFLOW_TRACKING_URI is a tracking server: open {uri} in a browser")
    return [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", HOST,
        "--port", str(options.port), "--workers", str(options.workers), *rest,
    ]  # fmt: skip


def _binds(opts: str) -> bool:
    """Do a server's options choose where it listens (gunicorn ``-b``/``--bind``, uvicorn
    ``--host``/``--uds``/``--fd``, waitress ``--listen``/``--unix-socket``), in any spelling?"""
    words = opts.replace("=", " ").split()
    return any(w.startswith(("-b", "--b", "--host", "--listen", "--uds", "--fd", "--unix"))
               or (w.startswith("-") and "host" in w) for w in words)  # fmt: skip


def _server_opts(args: Sequence[str]) -> list[str]:
    """The values of ``--gunicorn-opts``/``--uvicorn-opts``/``--waitress-opts`` in ``args``."""
    found = []
    for i, arg in enumerate(args):
        key, eq, value = arg.partition("=")
        if key in ("--gunicorn-opts", "--uvicorn-opts", "--waitress-opts"):
            found.append(value if eq else (args[i + 1] if i + 1 < len(args) else ""))
    return found


def experiment_url(uri: str, experiment: str, port: int) -> str:
    """The experiment's runs in the model-training view; the experiment list if unknown.

    Examples
    --------
    >>> experiment_url("sqlite:////nonexistent/mlflow.db", "numgrad", 5001)
    'http://127.0.0.1:5001/#/experiments?workflowType=machine_learning'
    """
    return local_url(experiment_page(find_experiment(uri, experiment)), port)


def find_experiment(uri: str, name: str) -> str | None:
    """The id of the active experiment ``name`` in the store, None if there is none (yet)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return None  # opening it would create it
    try:
        from numgrad.tracking.mlflow_store import MlflowStore

        return MlflowStore(uri).open().find_experiment(name)
    except Exception as exc:  # the server still serves what it can: say why, go on
        print(f"numgrad-ui: cannot read experiment '{name}' from {uri}: {exc}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: serve, print the page, open it if asked, stop on Ctrl-C."""
    args = list(sys.argv[1:] if argv is None else argv)
    command.run_command("numgrad-ui", lambda: serve(args))


def serve(args: Sequence[str]) -> int:
    """Run ``mlflow ui`` for ``numgrad-ui args`` until it ends or a signal stops it; its status."""
    try:
        argv = ui_argv(args)
    except UsageError as exc:
        parser().error(str(exc))  # prints usage and the reason, exit 2
    options, _ = parser().parse_known_args(args)
    busy = port_in_use(options.port)
    if busy:  # mlflow ui would log the bind error among its start-up lines and exit 0
        raise UsageError(f"cannot serve on {HOST}:{options.port}: {busy}")
    uri = argv[argv.index("--backend-store-uri") + 1]
    db = sqlite_path(uri)
    if db is not None and not db.exists():  # mlflow ui would make an empty one there
        raise UsageError(f"no store at {db} yet: run numgrad from this directory first, "
                         "or name one with --backend-store-uri")  # fmt: skip
    # MLflow's job runner (GenAI scorers, ~8 more processes) serves nothing numgrad logs.
    env = {**os.environ}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # Our lines first (flushed): a log reading numgrad-ui's output meets its URL, not the
    # server's start-up lines.
    url = experiment_url(uri, options.experiment, options.port)
    print(f"numgrad-ui: experiment '{options.experiment}' in MLflow's model-training view: {url}",
          flush=True)  # fmt: skip
    print(f"numgrad-ui: MLflow UI on {local_url('', options.port).rstrip('/')} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)  # fmt: skip
    server = None
    try:
        with signals.held():  # a signal now would leave a server nobody stops
            # SIGTERM to `mlflow ui` takes its uvicorn worker along; asking the kernel to send
            # it when numgrad-ui dies covers a SIGKILL, which no handler of ours sees.
            with_us = ending_with_this_process(signal.SIGTERM)
            server = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=with_us)
        return _serve(server, url, options)
    finally:
        if server is not None:
            with signals.held():  # a second Ctrl-C must not cut the stop short either
                stop(server)


def port_in_use(port: int) -> str | None:
    """Why ``port`` on 127.0.0.1 cannot be served, or None when it can (bound as uvicorn does)."""
    if not 0 < port < 65536:
        return "not a TCP port (1-65535)"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            return f"{exc.strerror.lower()} (another numgrad-ui or mlflow ui?); choose --port"
    return None


def _serve(server: subprocess.Popen, url: str, options: argparse.Namespace) -> int:
    answers = _answers(server, local_url("", options.port))
    exposed = {ip for ip, _ in listening(server.pid)} - LOOPBACK
    if exposed:  # whatever the options said, the server must not be reachable from outside
        raise UsageError(f"{EXPOSED} (the server listened on {', '.join(sorted(exposed))})")
    if options.open and answers:
        import webbrowser

        if not webbrowser.open(url):
            print(f"numgrad-ui: no browser to open; open {url}", file=sys.stderr)
    status = server.wait()
    return 128 - status if status < 0 else status


def _answers(server: subprocess.Popen, base: str) -> bool:
    """Wait until the server answers ``/health``; False if it exits first or never answers."""
    deadline = time.monotonic() + START_TIMEOUT
    while server.poll() is None and time.monotonic() < deadline:
        if server_alive(base, timeout=1.0):
            return True
        time.sleep(0.2)
    return False


def stop(server: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the server's process group; SIGKILL what is left after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        server.poll()  # reap the leader: a zombie keeps the group "alive" forever
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
