"""Where a run is in the MLflow UI: full URLs, and how to serve them (numgrad.tracking.pages)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from numgrad.tracking import pages
from tests.conftest import free_port


@contextmanager
def answering(port: int, status: int) -> Iterator[None]:
    """An HTTP server on 127.0.0.1:``port`` that answers every GET with ``status``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args) -> None:  # no request lines on the test's stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_is_a_full_url_on_the_tracking_server_or_on_numgrad_ui():
    page = pages.run_page("3", "abc")
    assert pages.page_url("https://mlflow.example/", page) == (
        "https://mlflow.example/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
    for local in ("sqlite:////data/mlflow.db", "postgresql://db/mlflow"):
        assert pages.page_url(local, page) == f"http://127.0.0.1:5000/{page}"
    assert pages.where("http://127.0.0.1:1", page) == f"http://127.0.0.1:1/{page}"  # no hint


def test_the_hint_names_the_command_that_serves_the_store_until_a_ui_answers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()
    own = f"sqlite:///{tmp_path}/outputs/mlflow.db"  # what numgrad-ui serves from here
    nobody = f"numgrad: no MLflow UI answers on http://127.0.0.1:{port}; serve the store with:"
    assert pages.serve_hint(own, port) == f"{nobody} numgrad-ui --port {port}"
    other = f"sqlite:///{tmp_path}/elsewhere/m.db"
    assert pages.serve_hint(other, port) == (
        f"{nobody} numgrad-ui --backend-store-uri {other} --port {port}"
    )
    with monkeypatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", other)  # numgrad-ui's default follows it
        assert pages.serve_hint(other, port) == f"{nobody} numgrad-ui --port {port}"
    with answering(port, 403):  # something else on the port (macOS's AirPlay takes 5000)
        assert pages.serve_hint(own, port) == f"{nobody} numgrad-ui --port {port}"
    with answering(port, 200):
        assert pages.serve_hint(own, port) is None
    assert pages.serve_hint("http://127.0.0.1:1", port) is None  # a server serves its pages
