"""``numgrad-ui``: the MLflow UI on numgrad's store, on 127.0.0.1 only (numgrad.ui)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request

import pytest
import yaml

from numgrad.ui import UsageError, ui_argv
from tests.conftest import all_runs, free_port, listening, numgrad_env, wait_for


def test_ui_command_line():
    argv = ui_argv([], environ={})
    assert argv[1:] == [
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        "sqlite:///outputs/mlflow.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5000",
        "--workers",
        "1",
    ]
    env = {"MLFLOW_TRACKING_URI": "sqlite:////data/m.db"}
    assert ui_argv(["-p", "5001", "--dev"], environ=env)[4:] == [
        "--backend-store-uri",
        "sqlite:////data/m.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
        "--workers",
        "1",
        "--dev",
    ]
    own = ui_argv(["--backend-store-uri=sqlite:///x.db", "--workers", "2"], environ={})
    assert own.count("--workers") == 1 and "sqlite:///outputs/mlflow.db" not in own
    for refused in (
        ["--host", "0.0.0.0"],
        ["--host=0.0.0.0"],
        ["-h", "0.0.0.0"],
        ["--uvicorn-opts", "--host 0.0.0.0"],
        ["--gunicorn-opts=--bind 0.0.0.0:80"],
    ):
        with pytest.raises(UsageError, match=r"127\.0\.0\.1 only"):
            ui_argv(refused, environ={})
    with pytest.raises(UsageError, match="tracking server"):
        ui_argv([], environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})


@pytest.mark.slow
def test_ui_serves_the_default_store_on_loopback_only(workdir):
    workdir.run("optimizer.steps=2")
    _, (run,) = all_runs(workdir.uri)
    port = free_port()
    ui = subprocess.Popen(
        [shutil.which("numgrad-ui") or "numgrad-ui", "--port", str(port)],
        cwd=workdir.path,
        env=numgrad_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/health"), timeout=90, every=0.3)
        assert listening(port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::
        listed = json.loads(
            _get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run.info.run_id}")
        )
        assert {f["path"] for f in listed["files"]} >= {"config.yaml", "history.csv", "weights"}
        config = _get(f"{base}/get-artifact?path=config.yaml&run_uuid={run.info.run_id}")
        assert yaml.safe_load(config)["optimizer"]["steps"] == 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None
