"""MLflow tracking: every run complete in the store, its status the truth.

Everything is read back from the store (``MlflowClient``, ``sqlite3``), never from
the sink that wrote it. The first part drives :mod:`numgrad.tracking` in-process
against a temp SQLite store; the ``slow`` part runs the installed ``numgrad``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from numgrad import tracking
from numgrad.descent import Descent, Diverged
from numgrad.gradient import vectorized_gradient
from numgrad.ui import UsageError, ui_argv
from tests.conftest import free_port, numgrad_env

STEP_METRICS = ["loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy"]
ARTIFACTS = {
    "config.yaml",
    "overrides.yaml",
    "history.csv",
    "weights/W_init.npy",
    "weights/W_final.npy",
    "weights/W_final.json",
    "figures/loss.png",
    "figures/grad_norm.png",
    "figures/weights.png",
}
PNG = b"\x89PNG\r\n\x1a\n"
CONFIG = {
    "seed": 0,
    "data": {"name": "article", "x": [0.6, 0.9], "t": [0, 0, 1]},
    "net": {"shape": [2, 3], "init": "normal", "scale": 1.0, "W": None},
    "gradient": {"method": "vectorized", "h": 1e-4, "check": True},
    "optimizer": {"lr": 0.5, "steps": 30, "tol": 0.0},
}


# ------------------------------------------------------------------------ helpers


def settings(uri: str, **extra) -> dict:
    return {"enabled": True, "uri": uri, "experiment": "numgrad", **extra}


def article_descent(
    steps: int,
    *,
    lr: float = 0.5,
    tol: float = 0.0,
    check: bool = True,
    W: np.ndarray | None = None,
) -> Descent:
    W = np.random.default_rng(0).normal(size=(2, 3)) if W is None else W
    x, labels = np.array([[0.6, 0.9]]), np.array([2])
    return Descent(
        W, x, labels, vectorized_gradient, h=1e-4, lr=lr, steps=steps, tol=tol, check=check
    )


def run_tracked(
    uri: str,
    descent: Descent,
    *,
    config=CONFIG,
    overrides=("optimizer.lr=0.5",),
    output_dir: Path | None = None,
    **extra,
) -> tracking.MlflowSink:
    """What cli.run does around a descent, in-process."""
    sink = tracking.open_sink(
        settings(uri, **extra),
        config=config,
        overrides=list(overrides),
        output_dir=output_dir,
        planned_steps=descent.steps,
    )
    with sink:
        sink.log_start(descent.W.copy())
        for record in descent:
            sink.log_step(record)
        sink.log_end(descent, W_final=descent.W)
    return sink


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store with MLflow's tables, made once: creating one costs ~1.5 s."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> str:
    """The URI of a fresh copy of the empty store at ``tmp_path/outputs/mlflow.db``."""
    (tmp_path / "outputs").mkdir()
    shutil.copyfile(empty_store, tmp_path / "outputs" / "mlflow.db")
    return sqlite_uri(tmp_path)


def all_runs(uri: str, experiment: str = "numgrad"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def read_csv(client: MlflowClient, run_id: str) -> np.ndarray:
    path = client.download_artifacts(run_id, "history.csv")
    return np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True))


def wait_for(probe, timeout: float = 60.0, every: float = 0.1):
    """Poll ``probe()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"nothing after {timeout} s")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- small functions


def test_resolve_uri_precedence():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    assert tracking.resolve_uri(None, {}) == "sqlite:///outputs/mlflow.db"
    assert tracking.resolve_uri(None, env) == "http://127.0.0.1:9"
    assert tracking.resolve_uri("sqlite:///x.db", env) == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "default"),
        (["hydra.run.dir=/x", "hydra/launcher=joblib"], "default"),
        (["optimizer.lr=0.5", "gradient.h=1e-3"], "lr=0.5,h=0.001"),
        (["data=blobs", "+data.x=abc", "~net.W", "tracking.run_name=z"], "data=blobs,x=abc,~W"),
        (["seed=007"], "seed=7"),
    ],
)
def test_run_name_from_overrides(overrides, name):
    assert tracking.run_name_from(overrides) == name


def test_params_flattened_within_limits():
    params = tracking.flatten_params(
        {
            "net": {"shape": [50, 50], "W": np.zeros((3, 3)).tolist()},
            "data": {"x": [1.5] * 2000},
            "seed": 3,
            "empty": {},
        }
    )
    assert params == {
        "net.shape": "[50, 50]",
        "net.W": "[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]",
        "data.x": "<see config.yaml>",  # 10,000 characters: the artifact holds it
        "seed": "3",
        "empty": "{}",
    }
    # an ndarray is never abbreviated by numpy's printing ("...")
    assert "..." not in tracking.flatten_params({"W": np.arange(2000.0)})["W"]


@pytest.mark.parametrize(
    ("planned", "max_points", "every"),
    [(0, 10, 1), (7, 1000, 1), (20000, 1000, 1), (999, 10, 1), (100, 1000, 7), (10**9, 50, 3)],
)
def test_sampled_steps_capped_first_and_last(planned, max_points, every):
    steps = sorted(tracking.sampled_steps(planned, max_points, every))
    assert steps[0] == 0 and steps[-1] == planned
    assert len(steps) <= max_points
    if (planned // every + 2) <= max_points:  # small runs: every log_every-th step
        assert steps == sorted({*range(0, planned + 1, every), planned})
    gaps = np.diff(steps)
    assert gaps.size == 0 or gaps.max() - gaps.min() <= 2 * every  # evenly spaced


# ------------------------------------------------------------ settings fail fast


def test_disabled_imports_no_mlflow(tmp_path):
    code = (
        "import sys; from numgrad import tracking\n"
        "s = tracking.open_sink({'enabled': False}, config={}, overrides=[], output_dir=None,"
        " planned_steps=1)\n"
        "with s:\n    s.log_start(None); s.log_step(None); s.log_end(None)\n"
        "assert isinstance(s, tracking.NullSink)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'matplotlib')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # no store, no lock file


def test_tracking_module_import_is_light():
    code = (
        "import sys, numgrad.tracking, numgrad.plots, numgrad.ui\n"
        "print('mlflow' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("ftp://example.org/store", "unsupported tracking URI scheme 'ftp'"),
        ("sqlite:///:memory:", "unsupported SQLite tracking URI"),
        ("sqlite://", "unsupported SQLite tracking URI"),
        ("sqlite:///{file}/sub/mlflow.db", "cannot write the MLflow store"),  # under a file
        ("sqlite:////proc/numgrad/mlflow.db", "cannot write the MLflow store"),
        ("file:///{file}/mlruns", "is a file store"),
        ("./mlruns", "is a file store"),
    ],
)
def test_bad_settings_fail_before_any_run(tmp_path, uri, words):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(tracking.TrackingError, match=words) as info:
        tracking.open_sink(
            settings(uri.format(file=tmp_path / "file")),
            config=CONFIG,
            overrides=[],
            output_dir=None,
            planned_steps=1,
        )
    assert "\n" not in str(info.value)


def test_dead_server_fails_within_15_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    start = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=r"tracking server .* is not reachable"):
        tracking.open_sink(
            settings(f"http://127.0.0.1:{port}"),
            config=CONFIG,
            overrides=[],
            output_dir=None,
            planned_steps=1,
        )
    assert time.monotonic() - start < 15


# --------------------------------------------------------------- what a run holds


def test_run_holds_everything(tmp_path, store):
    uri = store
    descent = article_descent(30)
    W_init = descent.W.copy()
    sink = run_tracked(
        uri,
        descent,
        output_dir=tmp_path / "run",
        overrides=["optimizer.lr=0.5", "gradient.check=true"],
    )
    client, runs = all_runs(uri)
    assert [r.info.run_id for r in runs] == [sink.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "lr=0.5,check=true"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()
    # params: the config flattened to dotted keys
    params = run.data.params
    assert params["optimizer.lr"] == "0.5" and params["gradient.h"] == "0.0001"
    assert params["net.shape"] == "[2, 3]" and params["data.name"] == "article"
    assert params["seed"] == "0" and params["net.W"] == "None"
    # tags
    tags = run.data.tags
    assert tags["numgrad.overrides"] == "optimizer.lr=0.5 gradient.check=true"
    assert tags["numgrad.output_dir"] == str(tmp_path / "run")
    assert tags["numgrad.stop_reason"] == "steps"
    assert tags["numgrad.host"] == socket.gethostname() and tags["numgrad.pid"] == str(os.getpid())
    commit = tracking.git_commit(Path(tracking.__file__).parent)
    assert tags.get("numgrad.git_commit") == commit == tags.get("mlflow.source.git.commit")
    # per-step metrics: every step 0..30, equal to history.csv
    table = read_csv(client, run.info.run_id)
    assert table["step"].tolist() == list(range(31))
    for key in [*STEP_METRICS, "grad_rel_error"]:
        assert history(client, run.info.run_id, key) == list(
            zip(range(31), table[key].tolist(), strict=True)
        )
    # final metrics; the final W element by element equals W_final.npy
    W = np.load(client.download_artifacts(run.info.run_id, "weights/W_final.npy"))
    np.testing.assert_array_equal(W, descent.W)
    np.testing.assert_array_equal(
        np.load(client.download_artifacts(run.info.run_id, "weights/W_init.npy")), W_init
    )
    metrics = run.data.metrics
    assert metrics["final_loss"] == descent.last_record.loss and metrics["steps_taken"] == 30
    assert metrics["final_accuracy"] == descent.last_record.accuracy
    assert {k: v for k, v in metrics.items() if k.startswith("W_final.")} == {
        f"W_final.{i}.{j}": W[i, j] for i in range(2) for j in range(3)
    }
    with open(client.download_artifacts(run.info.run_id, "weights/W_final.json")) as f:
        assert np.array_equal(np.array(json.load(f)["values"]), W)
    # artifacts
    assert artifact_paths(client, run.info.run_id) == ARTIFACTS
    for name in ("loss", "grad_norm", "weights"):
        assert (
            Path(client.download_artifacts(run.info.run_id, f"figures/{name}.png")).read_bytes()[:8]
            == PNG
        )
    with open(client.download_artifacts(run.info.run_id, "config.yaml")) as f:
        assert yaml.safe_load(f) == CONFIG
    with open(client.download_artifacts(run.info.run_id, "overrides.yaml")) as f:
        assert yaml.safe_load(f) == ["optimizer.lr=0.5", "gradient.check=true"]
    # everything under outputs/, nothing in the current directory
    assert (tmp_path / "outputs" / "mlartifacts" / run.info.run_id).is_dir()


def test_steps_are_stored_as_integers(tmp_path, store):
    uri = store
    run_tracked(uri, article_descent(5))
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as db:
        kinds = {row[0] for row in db.execute("SELECT DISTINCT typeof(step) FROM metrics")}
        kinds |= {row[0] for row in db.execute("SELECT DISTINCT typeof(step) FROM latest_metrics")}
    assert kinds == {"integer"}


def test_history_capped_at_max_points(tmp_path, store):
    uri = store
    sink = run_tracked(uri, article_descent(500), max_points=20)
    client = MlflowClient(uri)
    expected = sorted(tracking.sampled_steps(500, 20))
    for key in STEP_METRICS:
        assert [s for s, _ in history(client, sink.run_id, key)] == expected
    assert read_csv(client, sink.run_id)["step"].tolist() == list(range(501))  # csv: every step


def test_early_stop_logs_its_last_step(tmp_path, store):
    uri = store
    descent = article_descent(1000, tol=0.05)
    sink = run_tracked(uri, descent, max_points=10)
    assert descent.stop_reason == "converged" and descent.steps_taken < 1000
    client = MlflowClient(uri)
    steps = [s for s, _ in history(client, sink.run_id, "loss")]
    assert steps[0] == 0 and steps[-1] == descent.last_record.step
    assert client.get_run(sink.run_id).data.tags["numgrad.stop_reason"] == "converged"


def test_metrics_flushed_while_running(tmp_path, store):
    uri = store
    sink = tracking.open_sink(
        settings(uri, flush_seconds=0.0),
        config=CONFIG,
        overrides=[],
        output_dir=None,
        planned_steps=10,
    )
    descent = article_descent(10)
    with sink:
        (run,) = wait_for(lambda: all_runs(uri)[1])  # the run is created in the background
        assert run.info.status == "RUNNING"
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 4:  # visible in the store before the run ends
                seen = [
                    m.step for m in MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
                ]
                assert seen == [0, 1, 2, 3, 4]
        sink.log_end(descent)


def test_large_W_round_trips_bit_identical(tmp_path, store):
    uri = store
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(60, 50)), rng.integers(0, 50, size=60)
    descent = Descent(
        rng.normal(size=(50, 50)) / 3, x, labels, vectorized_gradient, h=1e-4, lr=0.1, steps=2
    )
    config = {"net": {"shape": [50, 50], "W": descent.W.tolist()}}  # given explicitly: too long
    sink = run_tracked(uri, descent, config=config)
    client = MlflowClient(uri)
    run = client.get_run(sink.run_id)
    W = np.load(client.download_artifacts(sink.run_id, "weights/W_final.npy"))
    assert W.dtype == np.float64 and W.tobytes() == descent.W.tobytes()
    assert not any(k.startswith("W_final.") for k in run.data.metrics)  # 2,500 > 64 elements
    assert run.data.params["net.W"] == "<see config.yaml>"
    assert run.data.tags["numgrad.params_in_config_yaml"] == "net.W"
    assert all(len(v) <= 6000 and "..." not in v for v in run.data.params.values())
    with open(client.download_artifacts(sink.run_id, "config.yaml")) as f:
        assert yaml.safe_load(f)["net"]["W"] == config["net"]["W"]  # reads back identical


def test_parent_run_id_tag(tmp_path, store, monkeypatch):
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, "0123456789abcdef0123456789abcdef")
    uri = store
    sink = run_tracked(uri, article_descent(1))
    tags = MlflowClient(uri).get_run(sink.run_id).data.tags
    assert tags["mlflow.parentRunId"] == "0123456789abcdef0123456789abcdef"


# ----------------------------------------------------------------- status truth


def test_divergence_fails_with_metrics_so_far(tmp_path, store):
    uri = store
    calls = []

    def blows_up_at_step_7(W, x, labels, h):  # the 8th gradient evaluation is not finite
        calls.append(1)
        return vectorized_gradient(W, x, labels, h) * (np.inf if len(calls) == 8 else 1.0)

    descent = Descent(
        np.zeros((2, 3)),
        np.array([[0.6, 0.9]]),
        np.array([2]),
        blows_up_at_step_7,
        h=1e-4,
        lr=0.5,
        steps=50,
    )
    with pytest.raises(Diverged) as info:
        run_tracked(uri, descent)
    client, (run,) = all_runs(uri)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    tags = run.data.tags
    assert tags["numgrad.stop_reason"] == "diverged"
    assert tags["numgrad.diverged.step"] == str(info.value.step)
    assert tags["numgrad.diverged.quantity"] == info.value.quantity
    assert tags["numgrad.error"].startswith("Diverged: diverged at step")
    assert info.value.step == 7 and info.value.quantity == "gradient"
    good = list(range(7))  # every step before the divergence
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == good
    assert read_csv(client, run.info.run_id)["step"].tolist() == good
    assert {"history.csv", "weights/W_init.npy", "config.yaml"} <= artifact_paths(
        client, run.info.run_id
    )


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (ValueError("boom"), "FAILED", "error"),
        (KeyboardInterrupt(), "KILLED", "interrupted"),
        (tracking.Terminated(), "KILLED", "terminated"),
    ],
)
def test_exception_mid_run_sets_status(tmp_path, store, exc, status, reason):
    uri = store
    descent = article_descent(10)
    sink = tracking.open_sink(
        settings(uri), config=CONFIG, overrides=[], output_dir=None, planned_steps=10
    )
    with pytest.raises(type(exc)), sink:
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 6:
                raise exc
    client, (run,) = all_runs(uri)
    assert run.info.status == status and run.data.tags["numgrad.stop_reason"] == reason
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == list(range(7))
    if status == "FAILED":
        assert run.data.tags["numgrad.error"] == "ValueError: boom"


def test_sigterm_raises_terminated_and_restores_handler(tmp_path, store):
    uri = store
    before = signal.getsignal(signal.SIGTERM)
    sink = tracking.open_sink(
        settings(uri), config=CONFIG, overrides=[], output_dir=None, planned_steps=10
    )
    descent = article_descent(10)
    with pytest.raises(tracking.Terminated), sink:
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler raises before this returns
    assert signal.getsignal(signal.SIGTERM) is before
    client, (run,) = all_runs(uri)
    assert run.info.status == "KILLED"
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == [0, 1, 2, 3]


def test_orphaned_run_is_marked_killed(tmp_path, store, capfd):
    uri = store
    run_tracked(uri, article_descent(1))  # creates the store and the experiment
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("numgrad").experiment_id
    pid = dead_pid()
    orphan = client.create_run(
        exp_id,
        run_name="orphan",
        tags={"numgrad.host": socket.gethostname(), "numgrad.pid": str(pid)},
    )
    alive = client.create_run(
        exp_id,
        run_name="alive",
        tags={"numgrad.host": socket.gethostname(), "numgrad.pid": str(os.getppid())},
    )
    elsewhere = client.create_run(
        exp_id, run_name="elsewhere", tags={"numgrad.host": "another-host", "numgrad.pid": str(pid)}
    )
    capfd.readouterr()
    run_tracked(uri, article_descent(1))
    err = capfd.readouterr().err
    assert f"marked run {orphan.info.run_id} (orphan) KILLED" in err and f"process {pid}" in err
    assert err.count("marked run") == 1
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"


# ------------------------------------------------------------- SQLite concurrency


def _open_and_log(uri: str, barrier, steps: int, flush_seconds: float, queue) -> None:
    try:
        barrier.wait(timeout=60)
        run_tracked(uri, article_descent(steps), max_points=10**6, flush_seconds=flush_seconds)
        queue.put("ok")
    except BaseException as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def _in_processes(n: int, uri: str, steps: int, flush_seconds: float) -> list[str]:
    ctx = multiprocessing.get_context("fork")  # mlflow is already imported: fast start
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_log, args=(uri, barrier, steps, flush_seconds, queue))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once(tmp_path):
    uri = sqlite_uri(tmp_path)
    assert _in_processes(6, uri, 3, 2.0) == ["ok"] * 6
    client, runs = all_runs(uri)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert client.search_runs(["0"]) == []  # none in the Default experiment
    assert len(client.search_experiments()) == 2  # Default and numgrad, no duplicate


@pytest.mark.slow
def test_two_processes_writing_2000_values_each(tmp_path, store, capfd):
    uri = store
    run_tracked(uri, article_descent(0))  # an existing store, as in a sweep
    # 333 steps x 6 metrics ~ 2,000 values each, one transaction per step
    assert _in_processes(2, uri, 333, 0.0) == ["ok"] * 2
    assert "database is locked" not in capfd.readouterr().err
    client, runs = all_runs(uri)
    runs = [r for r in runs if r.data.metrics["steps_taken"] == 333]
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in [*STEP_METRICS, "grad_rel_error"]:
            assert [s for s, _ in history(client, run.info.run_id, key)] == list(range(334))


# ------------------------------------------------------- the installed numgrad script


def store_rows(db: Path, sql: str) -> list[tuple]:
    """Rows from a store another process is writing; [] while it has no such table."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def loss_rows(db: Path) -> int:
    rows = store_rows(db, "SELECT COUNT(*) FROM metrics WHERE key = 'loss'") if db.exists() else []
    return rows[0][0] if rows else 0


@contextlib.contextmanager
def running(proc: subprocess.Popen):
    """Yield a started process; afterwards make sure it is gone and its pipes closed."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ValueError, OSError):  # already communicated
            proc.communicate(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def assert_killed_with_history(client: MlflowClient, run, reason: str) -> None:
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["numgrad.stop_reason"] == reason
    table = read_csv(client, run.info.run_id)
    last = int(table["step"][-1])
    assert table["step"].tolist() == list(range(last + 1))  # every step it made, in the csv
    logged = history(client, run.info.run_id, "loss")
    sample = sorted(s for s in tracking.sampled_steps(LONG_STEPS, 1000) if s <= last)
    assert [s for s, _ in logged] == sorted({*sample, last})  # nothing lost, nothing doubled
    assert len(logged) >= 5
    assert [v for _, v in logged] == table["loss"][[s for s, _ in logged]].tolist()


LONG_STEPS = 10**7  # ~10 min: always stopped long before its end
LONG_RUN = (f"optimizer.steps={LONG_STEPS}", "tracking.flush_seconds=0.2")


@pytest.mark.slow
def test_cli_default_run_is_complete(workdir):
    workdir.run("optimizer.steps=20", "gradient.check=true")
    assert workdir.store.is_file()
    client, (run,) = all_runs(workdir.uri)
    rid = run.info.run_id
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
    assert params == tracking.flatten_params(config)  # every config value is a param
    tags = run.data.tags
    assert tags["numgrad.overrides"] == "optimizer.steps=20 gradient.check=true"
    assert tags["numgrad.output_dir"] == str(workdir.path / "run")
    assert tags["numgrad.stop_reason"] == "steps" and tags["numgrad.host"] == socket.gethostname()
    assert tags.get("numgrad.git_commit") == tracking.git_commit(Path(tracking.__file__).parent)
    table = read_csv(client, rid)
    assert table["step"].tolist() == list(range(21))
    for key in [*STEP_METRICS, "grad_rel_error"]:
        assert history(client, rid, key) == list(zip(range(21), table[key].tolist(), strict=True))
    W = np.load(client.download_artifacts(rid, "weights/W_final.npy"))
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("W_final.")} == {
        f"W_final.{i}.{j}": W[i, j] for i in range(2) for j in range(3)
    }
    assert run.data.metrics["steps_taken"] == 20 and "final_accuracy" in run.data.metrics
    assert run.data.metrics["final_loss"] == table["loss"][-1]
    assert artifact_paths(client, rid) == ARTIFACTS
    rows = store_rows(workdir.store, "SELECT DISTINCT typeof(step) FROM metrics")
    assert rows == [("integer",)]


@pytest.mark.slow
def test_cli_run_against_a_tracking_server(workdir, mlflow_server):
    workdir.run(f"tracking.uri={mlflow_server.uri}", "optimizer.steps=5")
    assert not (workdir.path / "outputs" / "mlflow.db").exists()
    client, (run,) = all_runs(mlflow_server.uri)
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, rid, "loss")] == list(range(6))
    assert artifact_paths(client, rid) == ARTIFACTS  # served by the server
    W = np.load(client.download_artifacts(rid, "weights/W_final.npy"))
    assert all(run.data.metrics[f"W_final.{i}.{j}"] == W[i, j] for i in range(2) for j in range(3))
    assert list((mlflow_server.root / "artifacts").rglob("W_final.npy"))  # stored server-side
    assert listening(mlflow_server.port) == {"0100007F"}  # the test server: 127.0.0.1 only


@pytest.mark.slow
def test_cli_diverging_run_fails_with_metrics_so_far(workdir):
    proc = workdir.run("optimizer.lr=1e308", "data=blobs", check=False)
    assert proc.returncode == 1 and "diverged at step 1" in proc.stderr
    client, (run,) = all_runs(workdir.uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["numgrad.stop_reason"] == "diverged"
    assert run.data.tags["numgrad.diverged.step"] == "1"
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == [0]
    assert read_csv(client, run.info.run_id)["step"].tolist() == [0]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_dead_server_fails_fast_with_one_line(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    proc = workdir.run(f"tracking.uri=http://127.0.0.1:{port}", check=False)
    assert time.monotonic() - start < 15
    assert proc.returncode != 0
    first = f"numgrad: error: tracking server http://127.0.0.1:{port} is not reachable"
    assert proc.stderr.strip().startswith(first)
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir.path / "outputs" / "mlflow.db").exists()


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_server_killed_mid_run(workdir, mlflow_server):
    client = MlflowClient(mlflow_server.uri)
    with running(workdir.popen(f"tracking.uri={mlflow_server.uri}", *LONG_RUN)) as proc:
        (run,) = wait_for(lambda: all_runs(mlflow_server.uri)[1])
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 5)
        mlflow_server.stop(signal.SIGKILL)
        start = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - start
    assert proc.returncode != 0 and took < 30
    message = [line for line in err.splitlines() if line.startswith("numgrad: error:")]
    assert len(message) == 1 and f"lost the tracking store {mlflow_server.uri}" in message[0]
    mlflow_server.start()
    run = client.get_run(run.info.run_id)
    assert run.info.status == "RUNNING"  # nobody could tell the server otherwise
    steps = [s for s, _ in history(client, run.info.run_id, "loss")]
    sample = sorted(tracking.sampled_steps(LONG_STEPS, 1000))
    assert len(steps) >= 5 and steps == sample[: len(steps)]  # history up to then
    nxt = workdir.run(f"tracking.uri={mlflow_server.uri}", "optimizer.steps=1")
    assert f"marked run {run.info.run_id}" in nxt.stderr
    assert client.get_run(run.info.run_id).info.status == "KILLED"


@pytest.mark.slow
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
    assert not any(k.startswith("W_final.") for k in run.data.metrics)
    assert all("[[" not in v and len(v) <= 6000 for v in run.data.params.values())


@pytest.mark.slow
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


# ------------------------------------------------------------------------ numgrad-ui


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
        "--workers",
        "1",
        "--port",
        "5000",
    ]
    env = {"MLFLOW_TRACKING_URI": "sqlite:////data/m.db"}
    assert ui_argv(["-p", "5001", "--dev"], environ=env)[4:] == [
        "--backend-store-uri",
        "sqlite:////data/m.db",
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "-p",
        "5001",
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


def listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


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
