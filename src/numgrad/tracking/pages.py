"""Where a run is in the MLflow UI: pages of the model-training view, as URLs or paths.

MLflow 3's UI opens an experiment in its GenAI view (traces) unless the page's hash
URL asks for the model-training view with ``?workflowType=machine_learning``; the
experiment's ``mlflow.experimentKind`` tag does not choose it. Every page numgrad
names carries the parameter.

Examples
--------
>>> run_page("1", "abc")
'#/experiments/1/runs/abc?workflowType=machine_learning'
>>> where("http://127.0.0.1:5000", run_page("1", "abc"))
'http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
>>> where("sqlite:///outputs/mlflow.db", experiment_page("1"))
'#/experiments/1?workflowType=machine_learning in numgrad-ui (http://127.0.0.1:5000)'
"""

from __future__ import annotations

from numgrad.tracking.uri import is_http

HOST, DEFAULT_PORT = "127.0.0.1", 5000  # where numgrad-ui serves the UI
MODEL_TRAINING = "workflowType=machine_learning"


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


def where(uri: str, page: str) -> str:
    """``page`` on the tracking server ``uri``; for a local store, the page in numgrad-ui."""
    if is_http(uri):
        return url(uri, page)
    return f"{page} in numgrad-ui ({local_url('').rstrip('/')})"
