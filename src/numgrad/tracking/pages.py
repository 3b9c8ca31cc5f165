"""Where a run is in the MLflow UI: pages of the model-training view, as URLs or paths.

MLflow 3's UI opens an experiment in its GenAI view (traces) unless the page's hash
URL asks for the model-training view with ``?workflowType=machine_learning``; the
experiment's ``mlflow.experimentKind`` tag does not choose it. Every page numgrad
names carries the parameter, and is printed as a full URL a terminal can open: on the
tracking server itself, or on ``numgrad-ui`` (127.0.0.1:5000) for a local store.

Examples
--------
>>> run_page("1", "abc")
'#/experiments/1/runs/abc?workflowType=machine_learning'
>>> page_url("http://127.0.0.1:5001/", run_page("1", "abc"))
'http://127.0.0.1:5001/#/experiments/1/runs/abc?workflowType=machine_learning'
>>> page_url("sqlite:///outputs/mlflow.db", experiment_page("1"))
'http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning'
"""

from __future__ import annotations

import shlex
import urllib.request

from numgrad.tracking.uri import is_http, resolve_uri, sqlite_path

HOST, DEFAULT_PORT = "127.0.0.1", 5000  # where numgrad-ui serves the UI
MODEL_TRAINING = "workflowType=machine_learning"
PROBE_SECONDS = 0.5  # the loopback answers at once, or refuses at once


def experiment_page(experiment_id: str | None = None) -> str:
    """The experiment's runs table, or the list of experiments when the id is unknown."""
    if experiment_id is None:
        return f"#/experiments?{MODEL_TRAINING}"
    return f"#/experiments/{experiment_id}?{MODEL_TRAINING}"


def run_page(experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page: its Overview, or ``tab`` (``model-metrics``, ``artifacts``)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{MODEL_TRAINING}"


def url(base: str, page: str) -> str:
    """``page`` on the UI served at ``base``."""
    return f"{base.rstrip('/')}/{page}"


def local_url(page: str, port: int = DEFAULT_PORT) -> str:
    """``page`` on the UI ``numgrad-ui`` serves."""
    return url(f"http://{HOST}:{port}", page)


def page_url(uri: str, page: str) -> str:
    """``page`` as a full URL: on the tracking server ``uri``, else on numgrad-ui."""
    return url(uri, page) if is_http(uri) else local_url(page)


def where(uri: str, page: str) -> str:
    """``page``'s full URL; for a local store no UI serves yet, also how to serve it.

    The second part is a line of its own (``numgrad: ...``), so that the URL ends its
    line, where a terminal finds it.
    """
    hint = serve_hint(uri)
    return page_url(uri, page) + (f"\n{hint}" if hint else "")


def serve_hint(uri: str, port: int = DEFAULT_PORT) -> str | None:
    """How to serve store ``uri`` on numgrad-ui's port when no MLflow UI answers there.

    None for a tracking server (it serves its own pages) and when the port answers.
    ``numgrad-ui`` alone serves the store a plain ``numgrad`` in this directory uses;
    another store is named on its command line.

    Examples
    --------
    >>> serve_hint("http://mlflow.example:5000") is None
    True
    """
    if is_http(uri) or ui_answers(local_url("", port)):
        return None
    command = ["numgrad-ui"]
    own = sqlite_path(resolve_uri(None))
    if sqlite_path(uri) is None or sqlite_path(uri) != own:
        command += ["--backend-store-uri", uri]
    if port != DEFAULT_PORT:
        command += ["--port", str(port)]
    base = local_url("", port).rstrip("/")
    return f"numgrad: no MLflow UI answers on {base}; serve the store with: {shlex.join(command)}"


def ui_answers(base: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether an MLflow server answers ``/health`` at ``base`` with 200 (not some other
    program on the port)."""
    try:
        with urllib.request.urlopen(url(base, "health"), timeout=timeout) as answer:
            return answer.status == 200
    except (OSError, ValueError):
        return False
