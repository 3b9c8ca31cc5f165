"""``numgrad-ui``: the MLflow UI on numgrad's store, on 127.0.0.1 only (numgrad.ui)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml

from numgrad import processes
from numgrad.ui import UsageError, experiment_url, ui_argv
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
    assert ui_argv(["--open", "--experiment", "other"], environ={}) == argv  # numgrad-ui's own
    assert own.count("--workers") == 1 and "sqlite:///outputs/mlflow.db" not in own
    for refused in (
        ["--host", "0.0.0.0"],
        ["--host=0.0.0.0"],
        ["-h", "0.0.0.0"],
        ["--uvicorn-opts", "--host 0.0.0.0"],
        ["--gunicorn-opts=--bind 0.0.0.0:80"],
        ["--gunicorn-opts", "-b 0.0.0.0:5898"],  # gunicorn's short form was let through
        ["--gunicorn-opts", "-b0.0.0.0:5898"],
        ["--gunicorn-opts", "--workers 2 --bind=[::]:5898"],
        ["--uvicorn-opts=--uds /tmp/ui.sock"],
        ["--waitress-opts", "--listen=*:5898"],
    ):
        with pytest.raises(UsageError, match=r"127\.0\.0\.1 only"):
            ui_argv(refused, environ={})
    with pytest.raises(UsageError, match="tracking server"):
        ui_argv([], environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})


def test_the_printed_url_is_the_experiments_page_in_the_model_training_view(tmp_path, store):
    from mlflow.tracking import MlflowClient

    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert experiment_url(missing, "numgrad", 5001) == (
        "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"
    )
    assert not (tmp_path / "none").exists()  # looking did not create a store
    assert experiment_url(store, "numgrad", 5001).endswith(
        "/#/experiments?workflowType=machine_learning"
    )
    MlflowClient(store).create_experiment("other")
    experiment = MlflowClient(store).create_experiment("numgrad")
    assert experiment_url(store, "numgrad", 5001) == (
        f"http://127.0.0.1:5001/#/experiments/{experiment}?workflowType=machine_learning"
    )


@pytest.mark.slow
def test_ui_serves_the_default_store_on_loopback_only(workdir):
    """numgrad-ui: 127.0.0.1 only; prints the page, opens it (--open) once the server answers."""
    workdir.run("optimizer.steps=2")
    _, (run,) = all_runs(workdir.uri)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # $BROWSER stands for the browser: it records the URL it is given, if the server answers.
    opened = workdir.path / "opened.txt"
    browser = workdir.path / "browser.py"
    browser.write_text(
        f"#!{sys.executable}\n"
        "import sys, urllib.request\n"
        f"urllib.request.urlopen({base + '/health'!r}, timeout=5)\n"
        f"open({str(opened)!r}, 'a').write(sys.argv[1] + '\\n')\n"
    )
    browser.chmod(0o755)
    ui = subprocess.Popen(
        [shutil.which("numgrad-ui") or "numgrad-ui", "--port", str(port), "--open"],
        cwd=workdir.path,
        env=numgrad_env(BROWSER=str(browser)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        page = f"{base}/#/experiments/{run.info.experiment_id}?workflowType=machine_learning"
        assert ui.stdout.readline() == (
            f"numgrad-ui: experiment 'numgrad' in MLflow's model-training view: {page}\n"
        )
        assert wait_for(lambda: opened.is_file() and opened.read_text(), timeout=90) == page + "\n"
        assert listening(port) == {"0100007F"}  # 127.0.0.1, nothing on 0.0.0.0 or ::
        listed = json.loads(
            _get(f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={run.info.run_id}")
        )
        assert {f["path"] for f in listed["files"]} >= {"config.yaml", "history.csv", "weights"}
        config = _get(f"{base}/get-artifact?path=config.yaml&run_uuid={run.info.run_id}")
        assert yaml.safe_load(config)["optimizer"]["steps"] == 2
        ui.send_signal(signal.SIGTERM)  # numgrad-ui stops the server's whole process group
        assert ui.wait(timeout=30) == 143
        assert wait_for(lambda: not listening(port), timeout=20)
    finally:
        if ui.poll() is None:  # numgrad-ui takes its server down with it
            ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)
        ui.stdout.close()


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read()
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("port", ["busy", "70000"])
def test_a_port_it_cannot_serve_on_is_one_line_and_no_server(workdir, port):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        number = str(taken.getsockname()[1]) if port == "busy" else port
        proc = subprocess.run([shutil.which("numgrad-ui"), "--port", number], cwd=workdir.path,
                              env=numgrad_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"numgrad-ui: error: cannot serve on 127.0.0.1:{number}: ")
    assert ("address already in use" in line) if port == "busy" else ("not a TCP port" in line)
    assert not (workdir.path / "outputs").exists()  # no server started: no store made


@pytest.mark.slow
def test_a_server_listening_beyond_127_0_0_1_is_refused_whatever_its_options(monkeypatch, capsys):
    # What the server listens on is checked, not only its options: a stand-in server on
    # another loopback address (127.0.0.2, so nothing is exposed) counts as exposed.
    import argparse

    from numgrad import ui

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.2",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: ("127.0.0.2", port) in processes.listening(server.pid), timeout=60)
        monkeypatch.setattr(ui, "START_TIMEOUT", 1.0)
        options = argparse.Namespace(port=port, open=False)
        with pytest.raises(UsageError, match=r"127\.0\.0\.1 only.*listened on 127\.0\.0\.2"):
            ui._serve(server, "http://127.0.0.1/", options)
    finally:
        ui.stop(server)


@pytest.mark.slow
def test_numgrad_ui_on_a_missing_store_makes_none(tmp_path):
    proc = subprocess.run([shutil.which("numgrad-ui") or "numgrad-ui", "--port", str(free_port())],
                          cwd=tmp_path, env=numgrad_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"numgrad-ui: error: no store at {tmp_path / 'outputs' / 'mlflow.db'} yet: run numgrad "
        "from this directory first, or name one with --backend-store-uri"
    ]
    assert list(tmp_path.iterdir()) == []  # mlflow ui did not make an empty store
