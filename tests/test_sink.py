"""A run's records in MLflow, written in-process through the sink (numgrad.tracking.sink).

Everything is read back from the store (``MlflowClient``, ``sqlite3``) or from the run's
journal on disk, never from the sink that wrote it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from numgrad import signals
from numgrad.data.article import ArticleData
from numgrad.descent import Descent, Diverged
from numgrad.gradient import vectorized_gradient
from numgrad.tracking.journal import JOURNAL_FILE, JournalError, read_journal
from numgrad.tracking.provenance import PARENT_RUN_ENV, git_commit
from numgrad.tracking.records import sampled_steps
from numgrad.tracking.sink import MlflowSink, NullSink, open_sink
from tests.conftest import all_runs, artifact_paths, history, read_csv, settings

STEP_METRICS = ["loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy"]
ARTIFACTS = {
    "config.yaml", "overrides.yaml", "history.csv", "weights/W_init.npy",
    "weights/W_final.npy", "weights/W_final.json", "figures/loss.png",
    "figures/grad_norm.png", "figures/weights.png",
}  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"
CONFIG = {
    "seed": 0,
    "data": {"name": "article", "x": [0.6, 0.9], "t": [0, 0, 1]},
    "net": {"shape": [2, 3], "init": "normal", "scale": 1.0, "W": None},
    "gradient": {"method": "vectorized", "h": 1e-4, "check": True},
    "optimizer": {"lr": 0.5, "steps": 30, "tol": 0.0},
}


ARTICLE = OmegaConf.structured(ArticleData(x=[0.6, 0.9], t=[0, 0, 1]))  # the book's sample


def article_descent(steps: int, *, lr: float = 0.5, tol: float = 0.0, check: bool = True,
                    W: np.ndarray | None = None) -> Descent:  # fmt: skip
    W = np.random.default_rng(0).normal(size=(2, 3)) if W is None else W
    x, labels = np.array([[0.6, 0.9]]), np.array([2])
    return Descent(W, x, labels, vectorized_gradient, h=1e-4, lr=lr, steps=steps, tol=tol,
                   check=check)  # fmt: skip


def open_run(uri: str, run_dir: Path, steps: int, *, config=CONFIG,
             overrides=("optimizer.lr=0.5",), **extra) -> MlflowSink:  # fmt: skip
    return open_sink(
        settings(uri, **extra), config=config, overrides=list(overrides), output_dir=run_dir,
        planned_steps=steps,
    )  # fmt: skip


def run_tracked(uri: str, run_dir: Path, descent: Descent, **kwargs) -> MlflowSink:
    """What the runner does around a descent, in-process."""
    sink = open_run(uri, run_dir, descent.steps, **kwargs)
    with sink:
        sink.log_start(descent.W.copy())
        sink.log_data(descent.x, descent.labels, ARTICLE, seed=0)
        for record in descent:
            sink.log_step(record)
        sink.log_end(descent, W_final=descent.W)
    return sink


# --------------------------------------------------------------- what a run holds


def test_run_holds_everything(tmp_path, store):
    descent = article_descent(30)
    W_init = descent.W.copy()
    run_dir = tmp_path / "run"
    sink = run_tracked(
        store, run_dir, descent, overrides=["optimizer.lr=0.5", "gradient.check=true"]
    )
    assert sink.synced
    client, runs = all_runs(store)
    assert [r.info.run_id for r in runs] == [sink.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "lr=0.5,check=true"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()
    params = run.data.params
    assert params["optimizer.lr"] == "0.5" and params["gradient.h"] == "0.0001"
    assert params["net.shape"] == "[2, 3]" and params["data.name"] == "article"
    assert params["seed"] == "0" and params["net.W"] == "None"
    tags = run.data.tags
    assert tags["numgrad.overrides"] == "optimizer.lr=0.5 gradient.check=true"
    assert tags["numgrad.output_dir"] == str(run_dir)
    assert tags["numgrad.stop_reason"] == "steps"
    assert tags["numgrad.host"] == socket.gethostname() and tags["numgrad.pid"] == str(os.getpid())
    metrics = run.data.metrics
    assert tags["mlflow.note.content"] == (  # the run's description on its page
        "Gradient descent on article (1 sample) with a 2×3 SimpleNet (softmax(x·W), "
        "cross-entropy): vectorized central differences, h=0.0001; lr=0.5, 30 of 30 steps, "
        f"stopped: steps. Final loss {metrics['final_loss']:.6g}, accuracy "
        f"{metrics['final_accuracy']:.4f}."
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert tags.get("numgrad.git_commit") == head == tags.get("mlflow.source.git.commit")
    table = read_csv(client, run.info.run_id)
    assert table["step"].tolist() == list(range(31))
    for key in [*STEP_METRICS, "grad_rel_error"]:
        assert history(client, run.info.run_id, key) == list(
            zip(range(31), table[key].tolist(), strict=True)
        )
    W = np.load(client.download_artifacts(run.info.run_id, "weights/W_final.npy"))
    np.testing.assert_array_equal(W, descent.W)
    W0 = np.load(client.download_artifacts(run.info.run_id, "weights/W_init.npy"))
    np.testing.assert_array_equal(W0, W_init)
    metrics = run.data.metrics
    assert metrics["final_loss"] == descent.last_record.loss and metrics["steps_taken"] == 30
    assert metrics["final_accuracy"] == descent.last_record.accuracy
    assert {k: v for k, v in metrics.items() if "W_final" in k} == {
        f"weights.W_final.{i}.{j}": W[i, j] for i in range(2) for j in range(3)
    }
    # Single values at step 0: MLflow's UI draws them as one bar per run.
    for key in ("final_loss", "final_accuracy", "steps_taken", "weights.W_final.1.2"):
        assert history(client, run.info.run_id, key) == [(0, metrics[key])], key
    with open(client.download_artifacts(run.info.run_id, "weights/W_final.json")) as f:
        assert np.array_equal(np.array(json.load(f)["values"]), W)
    assert artifact_paths(client, run.info.run_id) == ARTIFACTS
    for name in ("loss", "grad_norm", "weights"):
        png = client.download_artifacts(run.info.run_id, f"figures/{name}.png")
        assert Path(png).read_bytes()[:8] == PNG
    with open(client.download_artifacts(run.info.run_id, "config.yaml")) as f:
        assert yaml.safe_load(f) == CONFIG
    with open(client.download_artifacts(run.info.run_id, "overrides.yaml")) as f:
        assert yaml.safe_load(f) == ["optimizer.lr=0.5", "gradient.check=true"]
    assert (tmp_path / "outputs" / "mlartifacts" / run.info.run_id).is_dir()
    # The run dir keeps the same files locally, and a journal the store fully holds.
    assert (run_dir / "artifacts" / "history.csv").read_bytes() == Path(
        client.download_artifacts(run.info.run_id, "history.csv")).read_bytes()  # fmt: skip
    view = read_journal(run_dir / JOURNAL_FILE)
    assert view.synced(store) and view.runs == {store: sink.run_id}


def test_steps_are_stored_as_integers(tmp_path, store):
    run_tracked(store, tmp_path / "run", article_descent(5))
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as db:
        kinds = {row[0] for row in db.execute("SELECT DISTINCT typeof(step) FROM metrics")}
        kinds |= {row[0] for row in db.execute("SELECT DISTINCT typeof(step) FROM latest_metrics")}
    assert kinds == {"integer"}


def test_metrics_capped_at_max_points_history_keeps_every_step(tmp_path, store):
    sink = run_tracked(store, tmp_path / "run", article_descent(500), max_points=20)
    client = MlflowClient(store)
    expected = sorted(sampled_steps(500, 20))
    for key in STEP_METRICS:
        assert [s for s, _ in history(client, sink.run_id, key)] == expected
    assert read_csv(client, sink.run_id)["step"].tolist() == list(range(501))


def test_history_csv_is_bounded(tmp_path, store):
    sink = run_tracked(store, tmp_path / "run", article_descent(1000, check=False),
                       history_max_rows=50)  # fmt: skip
    steps = read_csv(MlflowClient(store), sink.run_id)["step"].astype(int).tolist()
    assert len(steps) <= 50 and steps[0] == 0 and steps[-1] == 1000


def test_early_stop_logs_its_last_step(tmp_path, store):
    descent = article_descent(1000, tol=0.05)
    sink = run_tracked(store, tmp_path / "run", descent, max_points=10)
    assert descent.stop_reason == "converged" and descent.steps_taken < 1000
    client = MlflowClient(store)
    steps = [s for s, _ in history(client, sink.run_id, "loss")]
    assert steps[0] == 0 and steps[-1] == descent.last_record.step
    assert client.get_run(sink.run_id).data.tags["numgrad.stop_reason"] == "converged"


def test_a_non_finite_value_stays_out_of_the_metrics_and_in_history_csv(tmp_path, store):
    # MLflow would store inf as 1.8e308 and nan as 0, values a reviewer would believe.
    # The descent raises Diverged before such a step; the sink keeps its promise anyway.
    from dataclasses import replace

    descent = article_descent(2)
    sink = open_run(store, tmp_path / "run", 2)
    with sink:
        sink.log_start(descent.W.copy())
        for record in descent:
            if record.step == 1:
                record = replace(record, grad_max_abs=float("inf"), grad_rel_error=float("nan"))
            sink.log_step(record)
        sink.log_end(descent, W_final=descent.W)
    client = MlflowClient(store)
    assert [s for s, _ in history(client, sink.run_id, "grad_max_abs")] == [0, 2]
    assert [s for s, _ in history(client, sink.run_id, "grad_rel_error")] == [0, 2]
    assert [s for s, _ in history(client, sink.run_id, "loss")] == [0, 1, 2]
    rows = read_csv(client, sink.run_id)
    assert np.isinf(rows["grad_max_abs"][1]) and np.isnan(rows["grad_rel_error"][1])


def test_metrics_reach_the_store_while_running(tmp_path, store):
    sink = open_run(store, tmp_path / "run", 10, flush_seconds=1e-9)
    descent = article_descent(10)
    with sink:
        (run,) = all_runs(store)[1]  # the run exists as soon as the block is entered
        assert run.info.status == "RUNNING"
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 4:  # visible in the store before the run ends
                seen = [
                    m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "loss")
                ]
                assert seen == [0, 1, 2, 3, 4]
        sink.log_end(descent)


def test_large_W_round_trips_bit_identical(tmp_path, store):
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(60, 50)), rng.integers(0, 50, size=60)
    descent = Descent(rng.normal(size=(50, 50)) / 3, x, labels, vectorized_gradient,
                      h=1e-4, lr=0.1, steps=2)  # fmt: skip
    config = {"net": {"shape": [50, 50], "W": descent.W.tolist()}}  # given explicitly: too long
    sink = run_tracked(store, tmp_path / "run", descent, config=config)
    client = MlflowClient(store)
    run = client.get_run(sink.run_id)
    W = np.load(client.download_artifacts(sink.run_id, "weights/W_final.npy"))
    assert W.dtype == np.float64 and W.tobytes() == descent.W.tobytes()
    assert not any("W_final" in k for k in run.data.metrics)  # 2,500 > 64 elements
    assert run.data.params["net.W"] == "<see config.yaml>"
    assert run.data.tags["numgrad.params_in_config_yaml"] == "net.W"
    assert all(len(v) <= 6000 and "..." not in v for v in run.data.params.values())
    with open(client.download_artifacts(sink.run_id, "config.yaml")) as f:
        assert yaml.safe_load(f)["net"]["W"] == config["net"]["W"]


def test_parent_run_id_tag(tmp_path, store, monkeypatch):
    monkeypatch.setenv(PARENT_RUN_ENV, "0123456789abcdef0123456789abcdef")
    sink = run_tracked(store, tmp_path / "run", article_descent(1))
    tags = MlflowClient(store).get_run(sink.run_id).data.tags
    assert tags["mlflow.parentRunId"] == "0123456789abcdef0123456789abcdef"


def test_a_reused_run_dir_keeps_an_earlier_unsynced_journal(tmp_path, store):
    run_dir = tmp_path / "run"
    run_tracked(store, run_dir, article_descent(1), offline=True)  # never uploaded
    first = (run_dir / JOURNAL_FILE).read_bytes()
    run_tracked(store, run_dir, article_descent(1))
    assert (run_dir / "previous-1" / JOURNAL_FILE).read_bytes() == first
    assert (run_dir / "previous-1" / "artifacts" / "history.csv").is_file()
    run_tracked(store, run_dir, article_descent(1))  # the synced one simply makes way
    assert not (run_dir / "previous-2").exists()


# ----------------------------------------------------------------- status truth


def test_divergence_fails_with_metrics_so_far(tmp_path, store):
    calls = []

    def blows_up_at_step_7(W, x, labels, h):  # the 8th gradient evaluation is not finite
        calls.append(1)
        return vectorized_gradient(W, x, labels, h) * (np.inf if len(calls) == 8 else 1.0)

    descent = Descent(np.zeros((2, 3)), np.array([[0.6, 0.9]]), np.array([2]),
                      blows_up_at_step_7, h=1e-4, lr=0.5, steps=50)  # fmt: skip
    with pytest.raises(Diverged) as info:
        run_tracked(store, tmp_path / "run", descent)
    client, (run,) = all_runs(store)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    tags = run.data.tags
    assert tags["numgrad.stop_reason"] == "diverged"
    assert tags["numgrad.diverged.step"] == str(info.value.step) == "7"
    assert tags["numgrad.diverged.quantity"] == info.value.quantity == "gradient"
    assert tags["numgrad.error"].startswith("Diverged: diverged at step 7")
    loss_6 = history(client, run.info.run_id, "loss")[-1][1]
    assert tags["mlflow.note.content"].endswith(
        "lr=0.5, 6 of 30 steps, stopped: diverged at step 7 (gradient is inf). "  # CONFIG: 30
        f"At step 6: loss {loss_6:.6g}, accuracy 1.0000."
    )
    good = list(range(7))  # every step before the divergence
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == good
    assert read_csv(client, run.info.run_id)["step"].tolist() == good
    paths = artifact_paths(client, run.info.run_id)
    assert {"history.csv", "weights/W_init.npy", "config.yaml", "figures/loss.png"} <= paths
    assert "weights/W_final.npy" not in paths  # no final weights for a run that failed


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (ValueError("boom"), "FAILED", "error"),
        (KeyboardInterrupt(), "KILLED", "interrupted"),
        (signals.Terminated(), "KILLED", "terminated"),
    ],
)
def test_exception_mid_run_sets_status(tmp_path, store, exc, status, reason):
    descent = article_descent(10)
    sink = open_run(store, tmp_path / "run", 10)
    with pytest.raises(type(exc)), sink:
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 6:
                raise exc
    client, (run,) = all_runs(store)
    assert run.info.status == status and run.data.tags["numgrad.stop_reason"] == reason
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == list(range(7))
    if status == "FAILED":
        assert run.data.tags["numgrad.error"] == "ValueError: boom"
    assert read_journal(tmp_path / "run" / JOURNAL_FILE).end["status"] == status


def test_a_write_that_failed_mid_run_is_its_one_line_and_no_figures_are_drawn(
    tmp_path, store, capsys
):
    """A full disk that fails a write mid-run: drawing the figures on it would fail too and
    say so in a second line (seen in CI); the run fails on the write's one line instead."""
    descent, run_dir = article_descent(10), tmp_path / "run"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(JournalError, match="No space left on device; once there is room"):
        with open_run(store, run_dir, 10) as sink:
            sink.log_start(descent.W)
            for record in descent:
                sink.log_step(record)
                if record.step == 4:
                    raise JournalError.writing(full, str(run_dir / "history.csv"))
    assert capsys.readouterr().err == ""  # the one line is the raised error's, said by main
    _, (run,) = all_runs(store)
    assert run.info.status == "FAILED"
    assert not (run_dir / "artifacts" / "figures").exists()


def test_figures_that_cannot_be_drawn_are_one_line_after_a_whole_run(tmp_path, store, capsys):
    run_dir = tmp_path / "run"
    sink = open_run(store, run_dir, 10)
    with sink:
        descent = article_descent(10)
        sink.log_start(descent.W.copy())
        (run_dir / "artifacts" / "figures").write_text("a file where the folder goes")
        for record in descent:
            sink.log_step(record)
        sink.log_end(descent, W_final=descent.W)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("numgrad: figures not drawn: "), err
    client, (run,) = all_runs(store)
    assert run.info.status == "FINISHED" and sink.synced
    assert "weights/W_final.npy" in artifact_paths(client, run.info.run_id)


def test_sigterm_mid_run_ends_it_killed(tmp_path, store):
    sink = open_run(store, tmp_path / "run", 10)
    descent = article_descent(10)
    with pytest.raises(signals.Terminated), signals.raising(), sink:
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler raises before this returns
    client, (run,) = all_runs(store)
    assert run.info.status == "KILLED"
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == [0, 1, 2, 3]


def test_a_store_that_cannot_open_leaves_nothing(tmp_path, store):
    sink = open_run(store, tmp_path / "run", 1, experiment="Default")
    client = MlflowClient(store)
    client.delete_experiment("0")  # a deleted experiment: the run cannot start
    with pytest.raises(Exception, match="is deleted"):
        with sink:
            pass
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


# --------------------------------------------------------------- without a store


def test_disabled_imports_no_mlflow(tmp_path):
    code = (
        "import sys\n"
        "from numgrad.config import TrackingConfig\n"
        "from numgrad.tracking.sink import open_sink, NullSink\n"
        "s = open_sink(TrackingConfig(enabled=False), config={}, overrides=[], output_dir=None,"
        " planned_steps=1)\n"
        "with s:\n    s.log_start(None); s.log_step(None); s.log_end(None)\n"
        "assert isinstance(s, NullSink) and s.synced\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'matplotlib')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert proc.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # no store, no lock file


def test_tracking_modules_import_light():
    code = (
        "import sys, numgrad.tracking.sink, numgrad.tracking.sync, numgrad.plots.run, numgrad.ui\n"
        "print('mlflow' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_offline_run_writes_only_its_journal(tmp_path):
    uri = f"sqlite:///{tmp_path / 'never' / 'mlflow.db'}"
    code = (
        "import sys, numpy as np\n"
        "from numgrad.config import TrackingConfig\n"
        "from numgrad.descent import Descent\n"
        "from numgrad.gradient import vectorized_gradient\n"
        "from numgrad.tracking.sink import open_sink\n"
        f"s = open_sink(TrackingConfig(uri={uri!r}, offline=True), config={{'seed': 0}},"
        " overrides=[], output_dir='run', planned_steps=3)\n"
        "d = Descent(np.zeros((2, 3)), np.array([[0.6, 0.9]]), np.array([2]),"
        " vectorized_gradient, h=1e-4, lr=0.5, steps=3)\n"
        "from omegaconf import OmegaConf\n"
        "from numgrad.data.article import ArticleData\n"
        "with s:\n"
        "    s.log_start(d.W.copy())\n"
        "    s.log_data(d.x, d.labels, OmegaConf.structured(ArticleData(x=[.6, .9], t=[2])), 0)\n"
        "    for r in d: s.log_step(r)\n"
        "    s.log_end(d)\n"
        "print(s.synced, 'mlflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]
    assert "run is recorded locally" not in out.stderr  # the runner says it, once
    assert not (tmp_path / "never").exists()
    view = read_journal(tmp_path / "run" / JOURNAL_FILE)
    assert view.runs == {} and view.end["status"] == "FINISHED"
    kinds = [e["kind"] for e in view.entries]
    assert kinds.count("input") == 1 and kinds.count("model") == 1  # made without mlflow
    metrics = [m for e in view.entries if e["kind"] == "metrics" for m in e["metrics"]]
    assert sorted({m[3] for m in metrics if m[0] == "loss"}) == [0, 1, 2, 3]


def test_null_sink_accepts_everything():
    sink = NullSink()
    with sink:
        sink.log_start(None)
        sink.log_step(None)
        sink.log_end(None)
    assert sink.run_id is None and sink.describe() is None


def test_git_commit_is_the_checkouts():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert git_commit() == head and len(head) == 40
