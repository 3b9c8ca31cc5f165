"""The MLflow store as one object: experiments, orphans, concurrency (numgrad.tracking.mlflow_store)."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

from numgrad.tracking import mlflow_store
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.uri import TrackingError
from tests.conftest import all_runs, dead_pid, history
from tests.test_sink import STEP_METRICS, article_descent, run_tracked


def test_experiment_is_made_once_for_the_model_training_view(tmp_path, store):
    s = MlflowStore(store).open()
    first = s.experiment_id("numgrad")
    assert s.experiment_id("numgrad") == first
    exp = MlflowClient(store).get_experiment(first)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()


def test_a_deleted_experiment_is_one_clear_error(store):
    s = MlflowStore(store).open()
    MlflowClient(store).delete_experiment(s.experiment_id("gone"))
    with pytest.raises(TrackingError, match=r"experiment 'gone' is deleted .* restore it"):
        s.experiment_id("gone")


def test_orphaned_run_is_marked_killed(tmp_path, store, capfd):
    run_tracked(store, tmp_path / "a", article_descent(1))  # creates the experiment
    client = MlflowClient(store)
    exp_id = client.get_experiment_by_name("numgrad").experiment_id
    pid, host = dead_pid(), socket.gethostname()
    orphan = client.create_run(exp_id, run_name="orphan",
                               tags={"numgrad.host": host, "numgrad.pid": str(pid)})  # fmt: skip
    alive = client.create_run(exp_id, run_name="alive",
                              tags={"numgrad.host": host, "numgrad.pid": str(os.getppid())})  # fmt: skip
    elsewhere = client.create_run(exp_id, run_name="elsewhere",
                                  tags={"numgrad.host": "another-host", "numgrad.pid": str(pid)})  # fmt: skip
    capfd.readouterr()
    run_tracked(store, tmp_path / "b", article_descent(1))
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"numgrad: marked run {orphan.info.run_id} (orphan) KILLED: it was RUNNING but its "
        f"process {pid} on {host} is gone"
    ]
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(orphan.info.run_id).data.tags["numgrad.stop_reason"] == "orphaned"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"


def test_outages_are_told_from_refusals():
    assert MlflowStore.is_outage(MlflowException("API request failed: Max retries exceeded"))
    assert MlflowStore.is_outage(ConnectionRefusedError())
    refusal = MlflowException("bad", error_code=INVALID_PARAMETER_VALUE)
    assert not MlflowStore.is_outage(refusal)
    assert not MlflowStore.is_outage(TypeError("a bug is not an outage"))


def test_get_run_of_an_unknown_id_is_none(store):
    assert MlflowStore(store).open().get_run("0" * 32) is None


# ------------------------------------------------------------- SQLite concurrency


def _open_and_log(uri: str, run_dir: str, barrier, steps: int, flush: float, queue) -> None:
    try:
        barrier.wait(timeout=60)
        run_tracked(uri, Path(run_dir), article_descent(steps), max_points=10**6,
                    flush_seconds=flush)  # fmt: skip
        queue.put("ok")
    except BaseException as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def _in_processes(n: int, uri: str, tmp_path: Path, steps: int, flush: float) -> list[str]:
    ctx = multiprocessing.get_context("fork")  # mlflow is already imported: fast start
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_open_and_log,
                    args=(uri, str(tmp_path / f"run{i}"), barrier, steps, flush, queue))
        for i in range(n)
    ]  # fmt: skip
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))  # a race: one lucky timing proves little
def test_processes_opening_a_new_store_at_once(tmp_path, attempt):
    # Each also checks that the store is MLflow's before opening it, while the others
    # may be making its tables: it must never see them half made.
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    assert _in_processes(6, uri, tmp_path, 3, 2.0) == ["ok"] * 6
    client, runs = all_runs(uri)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert client.search_runs(["0"]) == []  # none in the Default experiment
    assert len(client.search_experiments()) == 2  # Default and numgrad, no duplicate


@pytest.mark.slow
def test_two_processes_writing_2000_values_each(tmp_path, store, capfd):
    run_tracked(store, tmp_path / "first", article_descent(0))  # an existing store, as in a sweep
    # 333 steps x 6 metrics ~ 2,000 values each, one transaction per step
    assert _in_processes(2, store, tmp_path, 333, 1e-9) == ["ok"] * 2
    assert "database is locked" not in capfd.readouterr().err
    client, runs = all_runs(store)
    runs = [r for r in runs if r.data.metrics["steps_taken"] == 333]
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        for key in [*STEP_METRICS, "grad_rel_error"]:
            assert [s for s, _ in history(client, run.info.run_id, key)] == list(range(334))


def test_a_run_finished_after_the_orphan_search_stays_finished(tmp_path, store, monkeypatch, capfd):
    # The race CI met: one process's search reads a run RUNNING, its writer then ends it
    # FINISHED and exits, and only then is its pid found gone. The run must stay FINISHED.
    run_tracked(store, tmp_path / "a", article_descent(1))
    client = MlflowClient(store)
    exp_id = client.get_experiment_by_name("numgrad").experiment_id
    tags = {"numgrad.host": socket.gethostname(), "numgrad.pid": str(dead_pid())}
    run = client.create_run(exp_id, run_name="ends-meanwhile", tags=tags)
    real = mlflow_store.orphaned

    def writer_ends_it_first(found):
        if client.get_run(run.info.run_id).info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FINISHED")  # what its writer did
        return real(found)

    monkeypatch.setattr(mlflow_store, "orphaned", writer_ends_it_first)
    capfd.readouterr()
    MlflowStore(store).open().reconcile_orphans(exp_id)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert "KILLED" not in capfd.readouterr().err
