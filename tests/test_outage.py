"""When the tracking server goes away: the journal keeps everything, the store catches up.

Real ``mlflow server`` processes on 127.0.0.1 with SQLite backends under tmp; the
installed ``numgrad`` and ``numgrad-sync`` in subprocesses. Everything is compared with
what an uninterrupted run of the same config leaves in the same store.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from numgrad.tracking.journal import JOURNAL_FILE, read_journal
from tests.conftest import all_runs, artifact_paths, history, running, wait_for
from tests.test_sync import journaled_metrics, stored_metrics, sync

pytestmark = pytest.mark.slow
# What differs between two runs of one config: the process, the folder, the run's name,
# the journal's own key, and which process uploaded it (numgrad-sync after an outage).
VOLATILE_TAGS = {"numgrad.pid", "numgrad.output_dir", "mlflow.runName", "numgrad.journal_key",
                 "numgrad.uploader_pid"}  # fmt: skip


def metric_keys(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(client.get_run(run_id).data.metrics)


def everything(client: MlflowClient, run_id: str) -> dict:
    """What a reviewer compares: params, tags, every metric value, artifacts, weights."""
    run = client.get_run(run_id)
    keys = metric_keys(client, run_id)
    csv_text = Path(client.download_artifacts(run_id, "history.csv")).read_text()
    return {
        "status": run.info.status,
        "params": run.data.params,
        "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
        "metrics": {k: history(client, run_id, k) for k in keys},
        "artifacts": artifact_paths(client, run_id),
        "W_final": np.load(client.download_artifacts(run_id, "weights/W_final.npy")).tobytes(),
        # every row, all but the wall-clock seconds
        "history": [line.rsplit(",", 1)[0] for line in csv_text.splitlines()],
    }


def test_server_back_within_minutes_the_run_finishes_with_every_point_once(workdir, mlflow_server):
    args = (f"tracking.uri={mlflow_server.uri}", "optimizer.steps=100000",
            "tracking.flush_seconds=0.2", "tracking.outage_grace_seconds=120")  # fmt: skip
    client = MlflowClient(mlflow_server.uri)
    with running(workdir.popen(*args)) as proc:
        (run,) = wait_for(lambda: all_runs(mlflow_server.uri)[1])
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 5)
        mlflow_server.stop(signal.SIGKILL)
        time.sleep(6)
        mlflow_server.start()
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"lost the tracking store {mlflow_server.uri}" in err
    assert f"the tracking store {mlflow_server.uri} answers again" in err
    assert "finished after 100000 steps" in out
    interrupted = everything(client, run.info.run_id)
    for key, points in interrupted["metrics"].items():
        assert len({s for s, _ in points}) == len(points), key  # stored exactly once
    workdir.run(*args)  # the same config, uninterrupted, into the same store
    (reference,) = [r for r in all_runs(mlflow_server.uri)[1] if r.info.run_id != run.info.run_id]
    assert interrupted == everything(client, reference.info.run_id)


def test_server_gone_for_good_exit_75_then_numgrad_sync(workdir, mlflow_server):
    args = (f"tracking.uri={mlflow_server.uri}", "optimizer.steps=20000",
            "tracking.flush_seconds=0.2", "tracking.outage_grace_seconds=5")  # fmt: skip
    client = MlflowClient(mlflow_server.uri)
    run_dir = workdir.path / "run"
    with running(workdir.popen(*args)) as proc:
        (run,) = wait_for(lambda: all_runs(mlflow_server.uri)[1])
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 5)
        mlflow_server.stop(signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - killed
    assert proc.returncode == 75, err
    assert took < 5 + 20  # the grace, the rest of a short run, and a little
    assert "finished after 20000 steps" in out  # the result stands
    last = err.strip().splitlines()[-1]
    assert last == (
        f"numgrad: the tracking store {mlflow_server.uri} is unreachable: the run is recorded "
        f"locally in {run_dir / JOURNAL_FILE}; upload it with: numgrad-sync {run_dir}"
    )
    view = read_journal(run_dir / JOURNAL_FILE)
    assert view.end["status"] == "FINISHED" and not view.synced(mlflow_server.uri)
    assert journaled_metrics(run_dir / JOURNAL_FILE)["loss"][-1][0] == 20000

    mlflow_server.start()
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nobody told it yet
    first = sync(workdir.path, str(run_dir))
    assert first.returncode == 0, first.stderr
    assert f"to run {run.info.run_id} (" in first.stdout and first.stdout.count("FINISHED") == 1
    synced = everything(client, run.info.run_id)
    again = sync(workdir.path, str(run_dir))
    assert again.returncode == 0 and "already complete" in again.stdout
    assert everything(client, run.info.run_id) == synced  # a second sync changes nothing

    workdir.run(*args)  # the same config, uninterrupted
    (reference,) = [r for r in all_runs(mlflow_server.uri)[1] if r.info.run_id != run.info.run_id]
    assert synced == everything(client, reference.info.run_id)


def test_sigkilled_run_is_synced_killed_with_every_journaled_point(workdir, mlflow_server):
    args = (f"tracking.uri={mlflow_server.uri}", "optimizer.steps=10000000",
            "tracking.flush_seconds=0.2")  # fmt: skip
    client = MlflowClient(mlflow_server.uri)
    run_dir = workdir.path / "run"
    with running(workdir.popen(*args)) as proc:
        (run,) = wait_for(lambda: all_runs(mlflow_server.uri)[1])
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 5)
        proc.kill()
        proc.communicate(timeout=30)
    journaled = journaled_metrics(run_dir / JOURNAL_FILE)
    out = sync(workdir.path, str(run_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[0].endswith("; KILLED")
    killed = client.get_run(run.info.run_id)
    assert killed.info.status == "KILLED" and killed.data.tags["numgrad.stop_reason"] == "killed"
    assert stored_metrics(client, run.info.run_id, journaled) == journaled
    assert sorted(journaled) == metric_keys(client, run.info.run_id)


def test_offline_run_syncs_into_a_server(workdir, mlflow_server):
    workdir.run("tracking.offline=true", "optimizer.steps=10")
    out = sync(workdir.path, "--uri", mlflow_server.uri, str(workdir.path / "run"))
    assert out.returncode == 0, out.stderr
    client, (run,) = all_runs(mlflow_server.uri)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in history(client, run.info.run_id, "loss")] == list(range(11))
    assert "weights/W_final.npy" in artifact_paths(client, run.info.run_id)
    assert list((Path(mlflow_server.root) / "artifacts").rglob("W_final.npy"))  # server-side


def test_a_sweep_whose_server_goes_away_counts_its_jobs_finished_not_synced(workdir, mlflow_server):
    from numgrad.sweep.summary import read_summary

    args = (f"tracking.uri={mlflow_server.uri}", "optimizer.steps=20000,10",
            "tracking.flush_seconds=0.2", "tracking.outage_grace_seconds=3")  # fmt: skip
    client = MlflowClient(mlflow_server.uri)
    with running(workdir.popen(*args, multirun=True)) as proc:
        wait_for(lambda: any(len(client.get_metric_history(r.info.run_id, "loss")) >= 5
                             for r in all_runs(mlflow_server.uri)[1]))  # fmt: skip
        mlflow_server.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    # Jobs journal and go on; the sweep's sender could not send the rest: exit 75.
    assert proc.returncode == 75, err
    rows = {r["job"]: r for r in read_summary(workdir.path / "multirun" / "sweep_summary.csv")}
    assert [rows[j]["status"] for j in ("0", "1")] == ["FINISHED_NOT_SYNCED"] * 2
    assert all(rows[j]["final_loss"] for j in ("0", "1"))
    assert f"upload it with: numgrad-sync {workdir.path / 'multirun'}" in err
    assert "refused" not in err  # an outage, not a refusal

    mlflow_server.start()
    out = sync(workdir.path, str(workdir.path / "multirun"))
    assert out.returncode == 0, out.stderr
    _, runs = all_runs(mlflow_server.uri)
    (parent,) = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(history(client, c.info.run_id, "loss")[-1][0] for c in children) == [10, 20000]


@pytest.mark.slow
def test_a_hung_server_never_stalls_the_descent(workdir, mlflow_server):
    # SIGSTOP: the server takes connections and never answers. Without the /health probe
    # a flush waited for the HTTP client's timeout and retries (~32 s between two steps).
    import csv
    import os

    args = (f"tracking.uri={mlflow_server.uri}", "optimizer.steps=200000",
            "tracking.flush_seconds=0.2", "tracking.outage_grace_seconds=120")  # fmt: skip
    client = MlflowClient(mlflow_server.uri)
    with running(workdir.popen(*args)) as proc:
        (run,) = wait_for(lambda: all_runs(mlflow_server.uri)[1])
        wait_for(lambda: len(client.get_metric_history(run.info.run_id, "loss")) >= 5)
        os.killpg(mlflow_server.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(15)
        finally:
            os.killpg(mlflow_server.proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"lost the tracking store {mlflow_server.uri}" in err
    with open(workdir.path / "run" / "artifacts" / "history.csv") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    assert seconds[-1] > 15  # the run went on through the hang
    gaps = np.diff(seconds)
    assert gaps.max() < 5.0, f"the descent stalled {gaps.max():.1f} s between two steps"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    points = client.get_metric_history(run.info.run_id, "loss")
    assert len({p.step for p in points}) == len(points)  # caught up, each point once
