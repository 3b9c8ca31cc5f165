"""The installed ``numgrad`` script, tracked: what each run leaves in the MLflow store.

Whole-process tests (marked slow): ``numgrad`` runs in a subprocess from a scratch
directory, as a user would start it; everything is read back with ``MlflowClient``
and ``sqlite3``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from numgrad.data import load_data
from numgrad.data.iris import IrisData
from numgrad.tracking.dataset import digest
from numgrad.tracking.records import flatten_params, sampled_steps
from tests.conftest import (
    all_runs,
    answers,
    artifact_paths,
    history,
    listening,
    read_csv,
    running,
    store_rows,
    wait_for,
)
from tests.test_sink import ARTIFACTS, STEP_METRICS

pytestmark = pytest.mark.slow


def loss_rows(db) -> int:
    rows = store_rows(db, "SELECT COUNT(*) FROM metrics WHERE key = 'loss'") if db.exists() else []
    return rows[0][0] if rows else 0


def assert_killed_with_history(client: MlflowClient, run, reason: str) -> None:
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["numgrad.stop_reason"] == reason
    table = read_csv(client, run.info.run_id)
    last = int(table["step"][-1])
    assert table["step"].tolist() == list(range(last + 1))  # every step it made, in the csv
    logged = history(client, run.info.run_id, "loss")
    sample = sorted(s for s in sampled_steps(LONG_STEPS, 1000) if s <= last)
    assert [s for s, _ in logged] == sorted({*sample, last})  # nothing lost, nothing doubled
    assert len(logged) >= 5
    assert [v for _, v in logged] == table["loss"][[s for s, _ in logged]].tolist()
    # W where the descent stopped: moved from W_init, whole
    W_init, W = (np.load(client.download_artifacts(run.info.run_id, f"weights/{name}.npy"))
                 for name in ("W_init", "W_final"))  # fmt: skip
    assert W.shape == W_init.shape == (2, 3) and np.isfinite(W).all() and (W != W_init).any()


LONG_STEPS = 10**7  # ~10 min: always stopped long before its end
LONG_RUN = (f"optimizer.steps={LONG_STEPS}", "tracking.flush_seconds=0.2")


def test_cli_default_run_is_complete(workdir):
    proc = workdir.run("optimizer.steps=20", "gradient.check=true")
    assert workdir.store.is_file()
    assert proc.stderr == ""  # not even MLflow's notes on making a new store
    client, (run,) = all_runs(workdir.uri)
    rid = run.info.run_id
    page = f"#/experiments/{run.info.experiment_id}/runs/{rid}?workflowType=machine_learning"
    lines = proc.stdout.splitlines()
    if not answers("http://127.0.0.1:5000/health"):  # how to serve the page, when none does
        assert lines.pop() == (
            "numgrad: no MLflow UI answers on http://127.0.0.1:5000; serve the store with: "
            "numgrad-ui"
        )  # the store numgrad-ui serves by default in the directory the run started in
    assert lines[-1] == (
        f"mlflow: run {rid} (steps=20,check=true) in experiment 'numgrad' on {workdir.uri}; "
        f"page: http://127.0.0.1:5000/{page}"
    )
    assert run.info.status == "FINISHED" and run.info.run_name == "steps=20,check=true"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (workdir.path / "outputs" / "mlartifacts" / rid).is_dir()
    assert not (workdir.path / "mlartifacts").exists() and not (workdir.path / "mlruns").exists()
    params = run.data.params
    expected = {
        "optimizer.lr": "0.1",
        "optimizer.steps": "20",
        "gradient.h": "0.0001",
        "gradient.check": "True",
        "net.shape": "[2, 3]",
        "seed": "0",
        "data.name": "article",
        "tracking.experiment": "numgrad",
    }
    assert expected.items() <= params.items()
    with open(client.download_artifacts(rid, "config.yaml")) as f:
        config = yaml.safe_load(f)
    assert params == flatten_params(config)  # every config value is a param
    tags = run.data.tags
    assert tags["numgrad.overrides"] == "optimizer.steps=20 gradient.check=true"
    assert tags["numgrad.output_dir"] == str(workdir.path / "run")
    assert tags["numgrad.stop_reason"] == "steps" and tags["numgrad.host"] == socket.gethostname()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert tags.get("numgrad.git_commit") == head.strip()
    table = read_csv(client, rid)
    assert table["step"].tolist() == list(range(21))
    for key in [*STEP_METRICS, "grad_rel_error"]:
        assert history(client, rid, key) == list(zip(range(21), table[key].tolist(), strict=True))
    W = np.load(client.download_artifacts(rid, "weights/W_final.npy"))
    assert {k: v for k, v in run.data.metrics.items() if "W_final" in k} == {
        f"weights.W_final.{i}.{j}": W[i, j] for i in range(2) for j in range(3)
    }
    assert run.data.metrics["steps_taken"] == 20 and "final_accuracy" in run.data.metrics
    assert run.data.metrics["final_loss"] == table["loss"][-1]
    assert artifact_paths(client, rid) == ARTIFACTS
    rows = store_rows(workdir.store, "SELECT DISTINCT typeof(step) FROM metrics")
    assert rows == [("integer",)]


def test_cli_iris_run_logs_its_dataset_and_model(workdir):
    workdir.run("data=iris", "data.test_fraction=0", "optimizer.steps=10")  # all 150 to train
    client, (run,) = all_runs(workdir.uri)
    (given,) = run.inputs.dataset_inputs
    x, t = load_data(OmegaConf.structured(IrisData()), [4, 3],
                     np.random.default_rng(0))  # fmt: skip
    assert (given.dataset.name, given.dataset.digest) == ("iris", digest(x, t))
    assert json.loads(given.dataset.source)["uri"].endswith("numgrad/data/iris.csv")
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [(m.name, m.source_run_id, m.status.name) for m in models] == [
        ("simplenet", run.info.run_id, "READY")
    ]
    assert [o.step for o in run.outputs.model_outputs] == [10]


def test_cli_run_against_a_tracking_server(workdir, mlflow_server):
    proc = workdir.run(f"tracking.uri={mlflow_server.uri}", "optimizer.steps=5")
    assert not (workdir.path / "outputs" / "mlflow.db").exists()
    client, (run,) = all_runs(mlflow_server.uri)
    rid = run.info.run_id
    assert proc.stdout.splitlines()[-1].endswith(
        f"; page: {mlflow_server.uri}/#/experiments/{run.info.experiment_id}/runs/{rid}"
        "?workflowType=machine_learning"
    )
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, rid, "loss")] == list(range(6))
    assert artifact_paths(client, rid) == ARTIFACTS  # served by the server
    W = np.load(client.download_artifacts(rid, "weights/W_final.npy"))
    assert all(
        run.data.metrics[f"weights.W_final.{i}.{j}"] == W[i, j] for i in range(2) for j in range(3)
    )
    assert list((mlflow_server.root / "artifacts").rglob("W_final.npy"))  # stored server-side
    assert listening(mlflow_server.port) == {"0100007F"}  # the test server: 127.0.0.1 only


def test_cli_diverging_run_fails_with_metrics_so_far(workdir):
    proc = workdir.run("optimizer.lr=1e308", "data=blobs", check=False)
    assert proc.returncode == 1 and "diverged at step 1" in proc.stderr
    client, (run,) = all_runs(workdir.uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["numgrad.stop_reason"] == "diverged"
    assert run.data.tags["numgrad.diverged.step"] == "1"
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == [0]
    assert read_csv(client, run.info.run_id)["step"].tolist() == [0]


@pytest.mark.parametrize(
    ("sig", "code", "reason"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
def test_cli_signal_mid_run_is_killed_with_metrics_so_far(workdir, sig, code, reason):
    with running(workdir.popen(*LONG_RUN)) as proc:
        wait_for(lambda: loss_rows(workdir.store) >= 5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    client, (run,) = all_runs(workdir.uri)
    assert_killed_with_history(client, run, reason)


def test_cli_sigkill_leaves_a_sound_store_and_the_next_start_reconciles(workdir):
    with running(workdir.popen(*LONG_RUN)) as proc:
        wait_for(lambda: loss_rows(workdir.store) >= 5)
        proc.kill()
        proc.communicate(timeout=30)
    assert store_rows(workdir.store, "PRAGMA integrity_check") == [("ok",)]
    client, (orphan,) = all_runs(workdir.uri)
    assert orphan.info.status == "RUNNING"
    assert orphan.data.tags["numgrad.pid"] == str(proc.pid)
    nxt = workdir.run("optimizer.steps=1")
    lines = [line for line in nxt.stderr.splitlines() if "marked run" in line]
    assert lines == [
        f"numgrad: marked run {orphan.info.run_id} ({orphan.info.run_name}) KILLED: it was "
        f"RUNNING but its process {proc.pid} on {socket.gethostname()} is gone"
    ]
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert history(client, orphan.info.run_id, "loss")  # what it logged is still there


def test_cli_dead_server_fails_fast_with_one_line(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = workdir.run(f"tracking.uri=http://127.0.0.1:{port}", check=False)
    assert time.monotonic() - start < 15
    assert proc.returncode == 2  # a bad tracking setting, as bad input: nothing run
    first = f"numgrad: error: tracking server http://127.0.0.1:{port} is not reachable"
    assert proc.stderr.strip().startswith(first)
    assert proc.stderr.strip().endswith(
        "or tracking.offline=true records the run locally for numgrad-sync"
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir.path / "outputs" / "mlflow.db").exists()


def test_cli_tracking_disabled_imports_no_mlflow_and_writes_no_store(workdir):
    argv = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "numgrad",
        *workdir.argv("tracking.enabled=false")[1:],
    ]
    proc = subprocess.run(argv, cwd=workdir.path, capture_output=True, text=True, check=True)
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if "import time:" in line
    ]
    assert "numgrad.cli" in imported
    assert not [m for m in imported if m.startswith(("mlflow", "matplotlib"))]
    assert not (workdir.path / "outputs").exists()


def test_cli_50x50_weights_round_trip_bit_identical(workdir):
    workdir.run("net.shape=[50,50]", "data=blobs", "optimizer.steps=2")
    client, (run,) = all_runs(workdir.uri)
    W = np.load(client.download_artifacts(run.info.run_id, "weights/W_final.npy"))
    with open(client.download_artifacts(run.info.run_id, "weights/W_final.json")) as f:
        doc = json.load(f)
    assert W.shape == (50, 50) and W.dtype == np.float64 and doc["shape"] == [50, 50]
    assert np.array(doc["values"]).tobytes() == W.tobytes()  # two encodings, same bits
    W0 = np.load(client.download_artifacts(run.info.run_id, "weights/W_init.npy"))
    assert W0.shape == (50, 50) and not np.array_equal(W0, W)
    assert not any("W_final" in k for k in run.data.metrics)
    assert all("[[" not in v and len(v) <= 6000 for v in run.data.params.values())


def test_cli_param_too_long_is_an_artifact(workdir):
    W = np.random.default_rng(3).normal(size=(20, 20))
    given = json.dumps(W.tolist()).replace(" ", "")
    workdir.run(
        "net.shape=[20,20]", "data=blobs", "net.init=given", f"net.W={given}", "optimizer.steps=1"
    )
    client, (run,) = all_runs(workdir.uri)
    assert len(given) > 6000
    assert run.data.params["net.W"] == "<see config.yaml>"
    assert run.data.tags["numgrad.params_in_config_yaml"] == "net.W"
    with open(client.download_artifacts(run.info.run_id, "config.yaml")) as f:
        assert np.array(yaml.safe_load(f)["net"]["W"]).tobytes() == W.tobytes()
    with open(client.download_artifacts(run.info.run_id, "overrides.yaml")) as f:
        assert f"net.W={given}" in yaml.safe_load(f)
    assert (
        np.load(client.download_artifacts(run.info.run_id, "weights/W_init.npy")).tobytes()
        == W.tobytes()
    )


def test_another_applications_database_is_refused_untouched(workdir):
    import sqlite3

    db = workdir.path / "app.db"
    with sqlite3.connect(db) as con:
        con.execute("create table customers(id int)")
    con.close()
    before = db.read_bytes()
    for multirun in (False, True):
        proc = workdir.run(f"tracking.uri=sqlite:///{db}", "optimizer.lr=0.1,0.2" if multirun
                           else "optimizer.lr=0.1", multirun=multirun, check=False)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (
            f"numgrad: error: {db} is a database of another application (tables: customers), "
            "not an MLflow store: numgrad will not add MLflow's tables to it; choose another "
            "tracking.uri"
        )
    assert db.read_bytes() == before
    assert sorted(p.name for p in workdir.path.iterdir()) == ["app.db"]  # no mlartifacts, no dirs


def test_rejected_input_leaves_no_folder_at_all(tmp_path):
    from tests.conftest import NUMGRAD, numgrad_env

    proc = subprocess.run([NUMGRAD, "optimizer.lr=-1"], cwd=tmp_path, env=numgrad_env(),
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert list(tmp_path.iterdir()) == []  # not even an empty outputs/runs/<date>/


def test_history_csv_is_bounded_and_keeps_its_ends(workdir):
    workdir.run("optimizer.steps=5000", "tracking.history_max_rows=100")
    client, (run,) = all_runs(workdir.uri)
    steps = read_csv(client, run.info.run_id)["step"].astype(int).tolist()
    assert len(steps) <= 100 and steps[0] == 0 and steps[-1] == 5000
    local = workdir.path / "run" / "artifacts" / "history.csv"
    uploaded = Path(client.download_artifacts(run.info.run_id, "history.csv"))
    assert local.read_bytes() == uploaded.read_bytes()
