"""Sweeps: a parent run per multirun, its children, the summary, launchers and Optuna.

Whole-process tests run the installed ``numgrad -m`` and read everything back from the
store with ``MlflowClient`` (and Hydra's own files where the sweeper writes them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from numgrad.plots import sweep as sweep_plots
from numgrad.sweep.summary import read_summary
from numgrad.tracking.journal import JOURNAL_FILE, JournalError, read_journal
from numgrad.tracking.records import sampled_steps
from tests.conftest import running, wait_for

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


# ------------------------------------------------------------------------ helpers


def sweep_runs(uri: str, experiment: str = "numgrad"):
    """The one parent (tagged ``numgrad.kind=sweep``) and every other run of the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.info.run_id != parent.info.run_id]
    for child in children:
        assert child.data.tags.get("mlflow.parentRunId") == parent.info.run_id, child.info.run_name
    return client, parent, children


def summary(client: MlflowClient, parent) -> list[dict[str, str]]:
    return read_summary(client.download_artifacts(parent.info.run_id, "sweep_summary.csv"))


def steps_of(client: MlflowClient, run, key: str = "loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def job_records(sweep_dir: Path) -> dict[int, dict]:
    records = (json.loads(p.read_text()) for p in sweep_dir.glob("*/numgrad_job.json"))
    return {r["job"]: r for r in records}


# ---------------------------------------------------------------- whole process


@pytest.mark.slow
def test_grid_sweep_parent_children_and_summary(workdir):
    proc = workdir.run("optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4", multirun=True)
    client, parent, children = sweep_runs(workdir.uri)

    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep lr=0.1,1.0 h=1e-2,1e-4"
    tags = parent.data.tags
    assert tags["numgrad.sweep.dir"] == str(workdir.path / "multirun")
    assert tags["numgrad.sweep.overrides"] == "optimizer.lr=0.1,1.0 gradient.h=1e-2,1e-4"
    assert tags["numgrad.sweep.failed_count"] == "0" and tags["numgrad.sweep.jobs"] == "4"
    assert parent.info.start_time <= min(c.info.start_time for c in children)

    names = {c.info.run_name: c for c in children}
    assert sorted(names) == ["lr=0.1,h=0.0001", "lr=0.1,h=0.01", "lr=1.0,h=0.0001", "lr=1.0,h=0.01"]
    for name, child in names.items():
        assert child.info.status == "FINISHED"
        lr, h = (part.split("=")[1] for part in name.split(","))
        assert float(child.data.params["optimizer.lr"]) == float(lr)
        assert float(child.data.params["gradient.h"]) == float(h)
        assert steps_of(client, child) == list(range(101))  # steps 0..100, every one
        assert steps_of(client, child, "accuracy") == list(range(101))

    rows = summary(client, parent)
    assert len(rows) == 4
    by_run = {r["run_id"]: r for r in rows}
    assert set(by_run) == {c.info.run_id for c in children}
    for child in children:
        row = by_run[child.info.run_id]
        assert row["status"] == "FINISHED" and row["steps_taken"] == "100"
        assert float(row["final_loss"]) == child.data.metrics["final_loss"]  # exact
        assert float(row["final_accuracy"]) == child.data.metrics["final_accuracy"]
        assert float(row["optimizer.lr"]) == float(child.data.params["optimizer.lr"])
        assert row["grad_rel_error"] == ""  # gradient.check was off
    assert parent.data.metrics["best_final_loss"] == min(
        c.data.metrics["final_loss"] for c in children
    )
    assert {
        "sweep_summary.csv", "sweep_summary.json", "multirun.yaml",
        "figures/final_loss_vs_optimizer.lr.png", "figures/final_loss_vs_gradient.h.png",
    } <= artifacts(client, parent.info.run_id)  # fmt: skip
    # The JSON beside the CSV is an MLflow table: the artifact view shows it as one.
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [
        {"path": "sweep_summary.json", "type": "table"}
    ]
    with open(client.download_artifacts(parent.info.run_id, "sweep_summary.json")) as f:
        table = json.load(f)
    assert sorted(dict(zip(table["columns"], r, strict=True))["run_id"] for r in table["data"]) == (
        sorted(by_run)
    )
    assert "optimizer/lr" in table["columns"] and "gradient/h" in table["columns"]
    # The description names the sweep, the counts and the best child.
    best = min(children, key=lambda c: c.data.metrics["final_loss"])
    note = tags["mlflow.note.content"]
    assert "4 jobs, 4 finished, 0 did not finish" in note
    assert f"Best: {best.info.run_name} (final loss {best.data.metrics['final_loss']:.6g})" in note
    page = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    assert (
        f"numgrad: parent run {parent.info.run_id} (sweep lr=0.1,1.0 h=1e-2,1e-4) on "
        f"{workdir.uri}; page: http://127.0.0.1:5000/{page}?workflowType=machine_learning\n"
    ) in proc.stdout
    # The same summary sits in the sweep dir, for a sweep without a store at hand.
    assert read_summary(workdir.path / "multirun" / "sweep_summary.csv") == rows


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [(), JOBLIB], ids=["basic", "joblib"])
def test_failed_jobs_are_all_reported_and_recorded(workdir, launcher):
    # job 0: invalid (fails before any run exists), job 1: diverges mid-run (data=blobs,
    # lr=1e308 overflows the logits), jobs 2 and 3 run after them, on joblib on the
    # same two workers.
    proc = workdir.run(
        "optimizer.lr=-1,1e308,0.1,0.5", "data=blobs", "optimizer.steps=10", *launcher,
        multirun=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "sweep FAILED: 2 of 4 jobs did not finish" in err
    tail = "data=blobs optimizer.steps=10) FAILED:"
    assert f"job 0 (optimizer.lr=-1 {tail} ConfigError: invalid optimizer.lr" in err
    assert f"job 1 (optimizer.lr=1e+308 {tail} Diverged: diverged at step" in err

    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["numgrad.sweep.failed_count"] == "2"
    assert parent.data.tags["numgrad.sweep.failed"] == "; ".join(
        f"optimizer.lr={lr} data=blobs optimizer.steps=10" for lr in ("-1", "1e+308")
    )
    assert sorted(c.info.run_name for c in children) == [
        f"lr={lr},data=blobs,steps=10" for lr in ("0.1", "0.5", "1e+308")
    ]  # the invalid cell has no run: it failed before one existed
    statuses = {c.data.params["optimizer.lr"]: c.info.status for c in children}
    assert statuses == {"0.1": "FINISHED", "0.5": "FINISHED", "1e+308": "FAILED"}
    diverged = next(c for c in children if c.info.status == "FAILED")
    assert diverged.data.tags["numgrad.error"].startswith("Diverged:")
    assert diverged.info.end_time is not None

    rows = {r["optimizer.lr"]: r for r in summary(client, parent)}
    assert sorted(rows) == ["-1", "0.1", "0.5", "1e+308"]  # every job, the invalid one too
    assert rows["-1"]["status"] == "FAILED" and rows["-1"]["run_id"] == ""
    assert rows["-1"]["error"].startswith("ConfigError: invalid optimizer.lr=-1.0")
    assert rows["1e+308"]["status"] == "FAILED" and rows["1e+308"]["run_id"] == diverged.info.run_id
    for lr in ("0.1", "0.5"):
        child = next(c for c in children if c.data.params["optimizer.lr"] == lr)
        assert rows[lr]["status"] == "FINISHED" and rows[lr]["run_id"] == child.info.run_id
        # A job that ran after a failure has its own, complete run and nothing else.
        assert steps_of(client, child) == list(range(11))
        assert (
            child.data.tags["numgrad.overrides"]
            == f"optimizer.lr={lr} data=blobs optimizer.steps=10"
        )
        assert float(rows[lr]["final_loss"]) == child.data.metrics["final_loss"]

    # Where each job ran, against the numgrad process itself (the parent run's pid).
    jobs = job_records(workdir.path / "multirun")
    numgrad_pid = int(parent.data.tags["numgrad.pid"])
    assert numgrad_pid != os.getpid() and proc.args[0].endswith("numgrad")
    if not launcher:
        assert {jobs[n]["pid"] for n in jobs} == {numgrad_pid}  # the basic launcher: in-process
    if launcher:
        # Two workers took the four jobs: a failed job's worker went on to a job that
        # finished, with no run left open from before.
        failed_pids = {jobs[0]["pid"], jobs[1]["pid"]}
        finished = [c for c in children if c.info.status == "FINISHED"]
        assert len({jobs[n]["pid"] for n in jobs}) <= 2 and numgrad_pid not in failed_pids
        failed_at = {
            jobs[0]["pid"]: (workdir.path / "multirun" / "0" / "numgrad_job.json").stat().st_mtime
        }
        failed_at[jobs[1]["pid"]] = min(
            failed_at.get(jobs[1]["pid"], 1e99), diverged.info.end_time / 1000
        )
        after = [
            c
            for c in finished
            if c.info.start_time / 1000 >= failed_at.get(int(c.data.tags["numgrad.pid"]), 1e99)
        ]
        assert after, "no worker ran a job after a failure"


@pytest.mark.slow
def test_joblib_two_workers_eight_jobs_on_a_new_store(workdir):
    assert not workdir.store.exists()
    proc = workdir.run(
        "optimizer.lr=0.05,0.1,0.2,0.5", "gradient.h=1e-3,1e-4", "optimizer.steps=30", *JOBLIB,
        multirun=True,
    )  # fmt: skip
    assert "database is locked" not in proc.stderr
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "FINISHED" and len(children) == 8
    assert len({c.info.run_name for c in children}) == 8
    assert {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["numgrad.pid"] for c in children}) == 2  # two worker processes
    for child in children:
        assert steps_of(client, child) == list(range(31))
    assert client.search_runs(["0"]) == []  # nothing in the Default experiment
    running = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "attributes.status = 'RUNNING'"
    )
    assert running == []
    assert len(summary(client, parent)) == 8


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_kills_parent_and_children(workdir):
    # Ctrl-C reaches the main process only (as with `kill -INT`): it marks the sweep
    # stopping (the queued job never starts) and passes SIGINT on to the workers in a
    # run, which end them KILLED before joblib kills the pool. (The whole process
    # group's signal: test_sweep_stopping.py.)
    proc = workdir.popen(
        "optimizer.lr=0.1,0.2,0.3", "optimizer.steps=1000000", "tracking.flush_seconds=0.2",
        *JOBLIB, multirun=True,
    )  # fmt: skip
    journals = [workdir.path / "multirun" / str(n) / JOURNAL_FILE for n in range(2)]

    def both_running() -> bool:  # two flushes in each worker's journal
        try:
            return all(
                sum(e["kind"] == "metrics" for e in read_journal(j).entries) >= 2 for j in journals
            )
        except (OSError, JournalError):  # not there yet
            return False

    with running(proc):
        wait_for(lambda: both_running() or proc.poll() is not None, timeout=120)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "numgrad: sweep KILLED: 3 of 3 jobs did not finish (2 KILLED, 1 NOT_STARTED)" in err
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "KILLED" and parent.info.end_time is not None
    assert len(children) == 2 and {c.info.status for c in children} == {"KILLED"}
    planned = sorted(sampled_steps(1_000_000, 1000))  # steps sent to the store
    for child in children:
        steps = steps_of(client, child)  # the history so far, none missing, plus the last step
        assert len(steps) >= 2 and steps[:-1] == planned[: len(steps) - 1]
        assert child.data.tags["numgrad.stop_reason"] == "interrupted"  # SIGINT, passed on
        assert {"history.csv", "weights/W_final.npy"} <= artifacts(client, child.info.run_id)
    rows = summary(client, parent)
    assert [r["status"] for r in rows] == ["KILLED", "KILLED", "NOT_STARTED"]


@pytest.mark.slow
def test_optuna_preset_minimises_final_loss(workdir):
    workdir.run("+search=lr_h", "hydra.sweeper.n_trials=6", "optimizer.steps=20", multirun=True)
    client, parent, children = sweep_runs(workdir.uri)
    assert len(children) == 6 and {c.info.status for c in children} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    assert "tag(log, interval(1e-3, 10.0))" in parent.data.tags["numgrad.sweep.params"]
    for child in children:
        assert 1e-3 <= float(child.data.params["optimizer.lr"]) <= 10.0
        assert 1e-8 <= float(child.data.params["gradient.h"]) <= 1e-1
    results = yaml.safe_load((workdir.path / "multirun" / "optimization_results.yaml").read_text())
    best = min(children, key=lambda c: c.data.metrics["final_loss"])
    assert results["best_value"] == best.data.metrics["final_loss"]
    assert results["best_params"]["optimizer.lr"] == float(best.data.params["optimizer.lr"])
    assert "optimization_results.yaml" in artifacts(client, parent.info.run_id)


@pytest.mark.slow
def test_optuna_goes_on_after_diverged_trials(workdir):
    # lr drawn from {0.5, 1e308}: the 1e308 trials diverge, return +inf (never NaN),
    # and the search still runs all its trials.
    proc = workdir.run(
        "+search=lr_h", "hydra.sweeper.n_trials=6", "optimizer.steps=5", "data=blobs",
        "optimizer.lr=choice(0.5,1e308)", multirun=True, check=False,
    )  # fmt: skip
    client, parent, children = sweep_runs(workdir.uri)
    rows = summary(client, parent)
    assert len(rows) == 6
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert failed and all(r["optimizer.lr"] == "1e+308" for r in failed)
    assert all(r["error"].startswith("Diverged:") for r in failed)
    assert proc.returncode == 1 and parent.info.status == "FAILED"
    results = yaml.safe_load((workdir.path / "multirun" / "optimization_results.yaml").read_text())
    finished = [c.data.metrics["final_loss"] for c in children if c.info.status == "FINISHED"]
    assert results["best_value"] == min(finished)
    assert results["best_params"]["optimizer.lr"] == 0.5


@pytest.mark.slow
def test_error_against_h_is_v_shaped(workdir):
    hs = ("1e-1", "1e-3", "1e-5", "1e-7", "1e-9", "1e-11")
    workdir.run(
        f"gradient.h={','.join(hs)}", "gradient.check=true", "optimizer.steps=0", multirun=True
    )
    client, parent, children = sweep_runs(workdir.uri)
    rows = {float(r["gradient.h"]): float(r["grad_rel_error"]) for r in summary(client, parent)}
    errors = [rows[float(h)] for h in hs]  # h from large to small
    best = errors.index(min(errors))
    assert 0 < best < len(errors) - 1  # smallest at an intermediate h
    assert errors[0] > errors[1] > errors[best]  # truncation error grows with h
    assert errors[-1] > errors[-2] > errors[best]  # round-off error grows as h shrinks
    for child in children:
        assert child.data.metrics["grad_rel_error"] == rows[float(child.data.params["gradient.h"])]
    assert "figures/grad_rel_error_vs_gradient.h.png" in artifacts(client, parent.info.run_id)


@pytest.mark.slow
def test_ray_launcher_children_on_a_tracking_server(workdir, mlflow_server):
    # A local Ray instance owned by the numgrad process (2 CPUs, its own temp dir, so it
    # never joins another Ray cluster on this machine), jobs logging over HTTP.
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    try:
        proc = workdir.run(
            "hydra/launcher=ray", "hydra.launcher.ray.init.address=local",
            "++hydra.launcher.ray.init.num_cpus=2",
            f"++hydra.launcher.ray.init._temp_dir={ray_tmp}",
            "++hydra.launcher.ray.init.include_dashboard=false",
            "optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4", "optimizer.steps=20",
            f"tracking.uri={mlflow_server.uri}", multirun=True, timeout=280,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "local store" not in proc.stderr  # a server: no warning
    client, parent, children = sweep_runs(mlflow_server.uri)
    assert parent.info.status == "FINISHED"
    names = sorted(c.info.run_name.split(",uri=")[0] for c in children)  # uri: Hydra-escaped
    assert names == sorted(
        f"lr={lr},h={h},steps=20" for lr in ("0.1", "1.0") for h in ("0.01", "0.0001")
    )
    assert {c.info.status for c in children} == {"FINISHED"}
    numgrad_pid = int(parent.data.tags["numgrad.pid"])  # the numgrad process, not pytest
    assert numgrad_pid != os.getpid()
    assert numgrad_pid not in {int(c.data.tags["numgrad.pid"]) for c in children}  # Ray workers
    for child in children:
        assert steps_of(client, child) == list(range(21))
    assert {r["run_id"] for r in summary(client, parent)} == {c.info.run_id for c in children}
    # One line per job as it ended (its status file, on this machine's disk), none of
    # the job's own output; the best child's page on the tracking server.
    ends = [x for x in proc.stdout.splitlines() if x.startswith("numgrad: [")]
    assert len(ends) == 4 and all(" FINISHED after " in x for x in ends), proc.stdout
    assert "W_final" not in proc.stdout + proc.stderr
    best = min(children, key=lambda c: c.data.metrics["final_loss"])
    assert (
        f"; page: {mlflow_server.uri}/#/experiments/{best.info.experiment_id}/runs/"
        f"{best.info.run_id}?workflowType=machine_learning\n"
    ) in proc.stdout


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_dirs(tmp_path):
    # Hydra's default run dir pattern (no hydra.run.dir override), two processes at once.
    numgrad = shutil.which("numgrad") or "numgrad"
    procs = [
        subprocess.Popen(
            [numgrad, f"seed={seed}", "optimizer.steps=1", "tracking.enabled=false"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in (1, 2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    dirs = sorted(
        p.parent.parent for p in (tmp_path / "outputs" / "runs").glob("*/*/.hydra/overrides.yaml")
    )
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    seeds = sorted(yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text())[0] for d in dirs)
    assert seeds == ["seed=1", "seed=2"]  # neither overwrote the other's .hydra/


@pytest.mark.slow
def test_one_v_per_dtype_in_the_error_against_h(workdir):
    # (float32 at h=1e-7 on this example: every quotient is exactly 0, StepTooSmall)
    hs = ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6")
    workdir.run(
        "gradient.dtype=float32,float64", f"gradient.h={','.join(hs)}", "gradient.check=true",
        "optimizer.steps=0", multirun=True,
    )  # fmt: skip
    client, parent, _ = sweep_runs(workdir.uri)
    rows = summary(client, parent)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"FINISHED"}
    assert {r["dtype"] for r in rows} == {"float32", "float64"}  # the dtype column
    best = {}
    for dtype in ("float32", "float64"):
        errors = {float(r["gradient.h"]): float(r["grad_rel_error"]) for r in rows
                  if r["dtype"] == dtype}  # fmt: skip
        ordered = [errors[float(h)] for h in hs]  # h from large to small
        low = ordered.index(min(ordered))
        assert 0 < low < len(hs) - 1, (dtype, ordered)  # a V: its bottom inside the range
        assert ordered[0] > ordered[low] < ordered[-1]
        best[dtype] = float(hs[low])
    assert best["float32"] > 10 * best["float64"]  # eps^(1/3): ~5e-3 against ~6e-6
    fig = sweep_plots.metric_vs_parameter(
        [{"params": {"gradient.h": r["gradient.h"], "gradient.dtype": r["dtype"]},
          "grad_rel_error": float(r["grad_rel_error"])} for r in rows],
        "gradient.h", "grad_rel_error",
    )  # fmt: skip
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dtype=float32", "dtype=float64"]
    assert "figures/grad_rel_error_vs_gradient.h.png" in artifacts(client, parent.info.run_id)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_two_sweeps_and_a_run_started_together_on_a_new_store(tmp_path, attempt):
    from tests.conftest import numgrad_env

    numgrad = shutil.which("numgrad") or "numgrad"
    grid = ("optimizer.lr=0.1,0.2,0.3,0.4", "optimizer.steps=50")
    commands = [[numgrad, "-m", f"hydra.sweep.dir={tmp_path}/sweep{n}", *grid] for n in (1, 2)] + [
        [numgrad, f"hydra.run.dir={tmp_path}/single", "optimizer.steps=50"]
    ]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=numgrad_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "alembic" not in err and "Warning" not in err, err
    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    assert client.search_runs(["0"]) == []  # nothing in Default
    runs = client.search_runs([client.get_experiment_by_name("numgrad").experiment_id])
    parents = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.params["optimizer.lr"] for c in children) == [
            "0.1",
            "0.2",
            "0.3",
            "0.4",
        ]
        assert {c.info.status for c in children} == {"FINISHED"}
        assert {c.data.tags["numgrad.output_dir"].rsplit("/", 2)[-2] for c in children} == {
            parent.data.tags["numgrad.sweep.dir"].rsplit("/", 1)[-1]
        }  # its own jobs, none of the other sweep's
    assert len(runs) == 2 + 8 + 1 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_sweep_killed_outright_leaves_no_run_running(workdir):
    # SIGKILL: no handler runs in the sweep. Its sender, a process of its own, sees its
    # stdin end, ends the sweep's journal and that of the job that ran in its process
    # KILLED, sends what was journaled, and exits.
    proc = workdir.popen("optimizer.lr=0.1,0.2,0.3", "optimizer.steps=10000000",
                         "tracking.flush_seconds=0.2", multirun=True)  # fmt: skip
    with running(proc):
        client = MlflowClient(workdir.uri)
        wait_for(lambda: workdir.store.is_file() and any(
            len(client.get_metric_history(r.info.run_id, "loss")) >= 3
            for r in client.search_runs(["1"])))  # fmt: skip
        proc.kill()
        proc.communicate(timeout=60)

    def ended():
        runs = client.search_runs(["1"])
        return len(runs) == 2 and all(r.info.status != "RUNNING" for r in runs)

    wait_for(ended, timeout=60)
    client, parent, (child,) = sweep_runs(workdir.uri)
    assert parent.info.status == child.info.status == "KILLED"
    assert parent.data.tags["numgrad.stop_reason"] == child.data.tags["numgrad.stop_reason"]
    assert child.data.tags["numgrad.stop_reason"] == "killed"
    journaled = read_journal(workdir.path / "multirun" / "0" / JOURNAL_FILE)
    steps = [m[3] for e in journaled.entries if e["kind"] == "metrics" for m in e["metrics"]
             if m[0] == "loss"]  # fmt: skip
    stored = client.get_metric_history(child.info.run_id, "loss")
    assert sorted(m.step for m in stored) == steps  # all it journaled, once
    senders = [
        c
        for c in Path("/proc").glob("[0-9]*/cmdline")
        if b"numgrad.sweep.sender_process" in _read(c) and str(workdir.path).encode() in _read(c)
    ]
    assert not senders  # it exited


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended while we looked
        return b""


@pytest.mark.slow
def test_sigterm_during_a_basic_sweep_counts_the_jobs_never_started(workdir):
    proc = workdir.popen("optimizer.lr=0.1,0.2,0.3,0.4", "optimizer.steps=10000000",
                         "tracking.flush_seconds=0.2", multirun=True)  # fmt: skip
    try:
        client = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if (workdir.path / "multirun" / "0" / "tracking_journal.jsonl").exists():
                client = MlflowClient(workdir.uri)
                if any(r.data.metrics.get("loss") for r in client.search_runs(["1"])):
                    break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "numgrad: sweep KILLED: 4 of 4 jobs did not finish (1 KILLED, 3 NOT_STARTED)" in err
    assert err.strip().splitlines()[-1] == "numgrad: terminated"
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]
    rows = summary(client, parent)
    assert [r["status"] for r in rows] == ["KILLED", "NOT_STARTED", "NOT_STARTED", "NOT_STARTED"]
    assert [r["optimizer.lr"] for r in rows] == ["0.1", "0.2", "0.3", "0.4"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("swept", "field"),
    [("tracking.uri=sqlite:///{d}/a.db,sqlite:///{d}/b.db", "tracking.uri"),
     ("tracking.offline=true,false", "tracking.offline"),
     ("tracking.uploaders=1,2", "tracking.uploaders")],
)  # fmt: skip
def test_a_swept_sweep_wide_tracking_setting_is_refused_before_anything_runs(workdir, swept, field):
    proc = workdir.run(swept.format(d=workdir.path), "optimizer.steps=1", multirun=True,
                       check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert (
        line.startswith(f"numgrad: error: invalid {field}=")
        and "one value for the whole sweep" in line
    )
    assert not (workdir.path / "a.db").exists() and not (workdir.path / "b.db").exists()
    assert not workdir.store.exists()
    assert not list((workdir.path / "multirun").glob("*/tracking_journal.jsonl"))


@pytest.mark.slow
def test_a_reused_sweep_dir_holds_only_this_sweeps_jobs_under_its_parent(workdir):
    # hydra.sweep.dir fixed (as the README's Ray example does): a second, smaller sweep
    # in the same dir must not adopt the first one's jobs.
    fixed = f"hydra.sweep.dir={workdir.path / 'fixed'}"
    workdir.run(fixed, "optimizer.lr=0.1,0.2,0.3,0.4", "optimizer.steps=3", multirun=True)
    workdir.run(fixed, "optimizer.lr=0.5,0.6", "optimizer.steps=3", multirun=True)
    client = MlflowClient(workdir.uri)
    exp = client.get_experiment_by_name("numgrad")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    first, second = sorted((r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"),
                           key=lambda r: r.info.start_time)  # fmt: skip
    under = {p.info.run_id: sorted(r.data.params["optimizer.lr"] for r in runs
                                   if r.data.tags.get("mlflow.parentRunId") == p.info.run_id)
             for p in (first, second)}  # fmt: skip
    assert under == {first.info.run_id: ["0.1", "0.2", "0.3", "0.4"],
                     second.info.run_id: ["0.5", "0.6"]}  # fmt: skip
    rows = summary(client, second)
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.5", "0.6"], rows
