"""``numgrad-sync``: journals into the store, once, whatever happened to the run.

Whole-process tests: ``numgrad`` and ``numgrad-sync`` run as a user would start them;
the store is read back with ``MlflowClient``, the journal from disk.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from numgrad.tracking.journal import JOURNAL_FILE, read_journal
from tests.conftest import (
    all_runs,
    artifact_paths,
    free_port,
    history,
    numgrad_env,
    read_csv,
    running,
    wait_for,
)
from tests.test_sink import ARTIFACTS, STEP_METRICS

pytestmark = pytest.mark.slow
SYNC = shutil.which("numgrad-sync") or "numgrad-sync"
OFFLINE = ("tracking.offline=true", "optimizer.steps=30", "gradient.check=true")


def sync(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNC, *args], cwd=cwd, env=numgrad_env(), capture_output=True,
                          text=True, timeout=240)  # fmt: skip


def journaled_metrics(journal: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric value a journal holds, by key, as (step, value) sorted by step."""
    out: dict[str, list[tuple[int, float]]] = {}
    for entry in read_journal(journal).entries:
        for key, value, _, step in entry.get("metrics", []) if entry["kind"] == "metrics" else []:
            out.setdefault(key, []).append((step, value))
    return {k: sorted(v) for k, v in out.items()}


def stored_metrics(client, run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    return {key: history(client, run_id, key) for key in keys}


def test_an_offline_run_touches_no_store_and_syncs_complete_once(workdir):
    proc = workdir.run(*OFFLINE)
    run_dir = workdir.path / "run"
    assert (
        "the run is recorded locally in" in proc.stdout and f"numgrad-sync {run_dir}" in proc.stdout
    )
    assert not (workdir.path / "outputs").exists()  # no store, no lock file
    target = f"sqlite:///{workdir.path / 'other' / 'mlflow.db'}"
    first = sync(workdir.path, "--uri", target, str(run_dir))
    assert first.returncode == 0, first.stderr
    line, summary = first.stdout.splitlines()
    assert "metric values), 1 artifact, 1 dataset input, 1 model to run " in line
    assert summary == "numgrad-sync: 1 journal: 1 uploaded, 0 already complete, 0 skipped"
    client, (run,) = all_runs(target)
    assert run.info.status == "FINISHED" and run.info.run_name == "steps=30,check=true"
    view = read_journal(run_dir / JOURNAL_FILE)
    assert run.info.start_time == view.start["start_time"]  # the run's own time, not the sync's
    assert (
        run.data.params["optimizer.steps"] == "30" and run.data.params["tracking.offline"] == "True"
    )
    assert run.data.tags["numgrad.stop_reason"] == "steps"
    assert artifact_paths(client, run.info.run_id) == ARTIFACTS
    journaled = journaled_metrics(run_dir / JOURNAL_FILE)
    assert sorted(journaled) == sorted([*STEP_METRICS, "grad_rel_error", "final_loss",
                                        "final_accuracy", "steps_taken"] + [
        f"weights.W_final.{i}.{j}" for i in range(2) for j in range(3)])  # fmt: skip
    assert stored_metrics(client, run.info.run_id, journaled) == journaled
    assert read_csv(client, run.info.run_id)["step"].tolist() == list(range(31))
    again = sync(workdir.path, "--uri", target, str(run_dir))
    assert again.returncode == 0 and "already complete" in again.stdout
    _, (same,) = all_runs(target)
    assert stored_metrics(client, same.info.run_id, journaled) == journaled  # nothing doubled


def test_with_no_path_it_syncs_everything_under_outputs_not_yet_complete(workdir, empty_store):
    for seed in (1, 2):
        subprocess.run([workdir.argv()[0], f"seed={seed}", *OFFLINE], cwd=workdir.path,
                       env=numgrad_env(), check=True, capture_output=True)  # fmt: skip
    journals = sorted((workdir.path / "outputs").rglob(JOURNAL_FILE))
    assert len(journals) == 2
    (workdir.path / "outputs").mkdir(exist_ok=True)
    shutil.copyfile(empty_store, workdir.store)  # the store the runs were meant for
    done = sync(workdir.path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "numgrad-sync: 2 journals: 2 uploaded, 0 already complete, 0 skipped"
    )
    _, runs = all_runs(workdir.uri)
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert sync(workdir.path).stdout.splitlines() == [
        "numgrad-sync: 2 journals: 0 uploaded, 2 already complete, 0 skipped"
    ]


def test_a_path_with_no_journal_is_an_error_not_nothing_to_sync(workdir):
    (workdir.path / "empty").mkdir()
    for path, why in [("nope", "no such file or directory"),
                      ("empty", "no run journal (tracking_journal.jsonl) at or under it")]:  # fmt: skip
        out = sync(workdir.path, path)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr == f"numgrad-sync: error: {path}: {why}\n"
    out = sync(workdir.path)  # no path: nothing under ./outputs is nothing to do
    assert out.returncode == 0
    assert out.stdout == "numgrad-sync: 0 journals: 0 uploaded, 0 already complete, 0 skipped\n"


def test_a_dead_store_gets_numgrad_syncs_own_advice(workdir):
    """Not numgrad's (``tracking.offline=true``: meaningless to a sync), and nothing written."""
    workdir.run(*OFFLINE)
    journal = workdir.path / "run" / JOURNAL_FILE
    before = journal.read_bytes()
    uri = f"http://127.0.0.1:{free_port()}"
    proc = sync(workdir.path, "--uri", uri, str(workdir.path / "run"))
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"numgrad-sync: run: skipped: tracking server {uri} is not reachable")
    assert line.endswith("; start it, or name another store with numgrad-sync --uri"), line
    assert "tracking." not in line
    assert journal.read_bytes() == before


def test_a_torn_last_line_is_skipped_and_said(workdir):
    workdir.run(*OFFLINE)
    journal = workdir.path / "run" / JOURNAL_FILE
    data = journal.read_bytes()
    lines = data.rstrip(b"\n").split(b"\n")
    cut = len(data) - len(lines[-1]) // 2 - 1  # half of the last line (the end record)
    journal.write_bytes(data[:cut])  # a power cut mid-write
    before = journaled_metrics(journal)
    target = f"sqlite:///{workdir.path / 'm.db'}"
    proc = sync(workdir.path, "--uri", target, str(workdir.path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert f"(skipped line {len(lines)} (" in proc.stdout and "cut short" in proc.stdout
    client, (run,) = all_runs(target)
    assert run.info.status == "KILLED"  # the end record was the torn line: no status known
    assert stored_metrics(client, run.info.run_id, before) == before
    assert sync(workdir.path, "--uri", target, str(workdir.path / "run")).returncode == 0


def test_an_unreadable_journal_is_named_and_skipped_whole(workdir):
    workdir.run(*OFFLINE)
    journal = workdir.path / "run" / JOURNAL_FILE
    lines = journal.read_bytes().split(b"\n")
    lines[2] = b"garbage"
    journal.write_bytes(b"\n".join(lines))
    target = f"sqlite:///{workdir.path / 'm.db'}"
    proc = sync(workdir.path, "--uri", target, str(workdir.path / "run"))
    assert proc.returncode == 1
    assert (
        f"numgrad-sync: {journal}: skipped, unreadable: {journal}: line 3 is not a journal record"
        in proc.stderr
    )
    assert proc.stdout.splitlines()[-1].endswith("0 uploaded, 0 already complete, 1 skipped")
    assert all_runs(target)[1] == []  # nothing half-uploaded


def test_a_live_run_is_never_synced(workdir):
    with running(workdir.popen("tracking.offline=true", "optimizer.steps=10000000",
                               "tracking.flush_seconds=0.2")) as proc:  # fmt: skip
        journal = workdir.path / "run" / JOURNAL_FILE
        wait_for(lambda: journal.exists() and journaled_metrics(journal).get("loss"))
        target = f"sqlite:///{workdir.path / 'm.db'}"
        out = sync(workdir.path, "--uri", target, str(workdir.path / "run"))
        # A note, not a failure: a cron'd sync does not fail whenever something runs.
        assert out.returncode == 0 and f"its run is still going (pid {proc.pid})" in out.stdout
        assert "1 left for later, 0 skipped" in out.stdout
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert read_journal(journal).end["status"] == "KILLED"
    out = sync(workdir.path, "--uri", target, str(workdir.path / "run"))
    assert out.returncode == 0
    _, (run,) = all_runs(target)
    assert run.info.status == "KILLED" and run.data.tags["numgrad.stop_reason"] == "interrupted"


def test_an_offline_sweep_keeps_its_parent_and_children_after_sync(workdir):
    proc = workdir.run("tracking.offline=true", "optimizer.lr=0.1,1.0", "optimizer.steps=5",
                       multirun=True)  # fmt: skip
    assert proc.returncode == 0  # offline by choice
    last = proc.stdout.splitlines()[-4:]
    assert last[0].startswith("numgrad: sweep FINISHED: 2 jobs (2 FINISHED_NOT_SYNCED) in ")
    assert last[2] == (
        f"numgrad: recorded locally; upload it with: numgrad-sync {workdir.path / 'multirun'}"
    )
    assert last[3].startswith("numgrad: summary ")
    target = f"sqlite:///{workdir.path / 'm.db'}"
    out = sync(workdir.path, "--uri", target, str(workdir.path / "multirun"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].endswith(
        "3 journals: 3 uploaded, 0 already complete, 0 skipped"
    )
    client, runs = all_runs(target)
    (parent,) = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.1", "1.0"]
    assert "sweep_summary.csv" in artifact_paths(client, parent.info.run_id)


def test_an_offline_run_gets_its_dataset_and_model_at_sync_and_only_once(workdir):
    workdir.run("tracking.offline=true", "data=iris", "optimizer.steps=10")
    run_dir = workdir.path / "run"
    target = f"sqlite:///{workdir.path / 'm.db'}"
    assert sync(workdir.path, "--uri", target, str(run_dir)).returncode == 0
    client, (run,) = all_runs(target)

    def inputs_and_models():
        stored = client.get_run(run.info.run_id)
        models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
        return (
            [(d.dataset.name, d.dataset.digest) for d in stored.inputs.dataset_inputs],
            [(m.model_id, m.status.name, len(m.metrics)) for m in models],
            [o.model_id for o in stored.outputs.model_outputs],
        )

    first = inputs_and_models()
    datasets, (model,), outputs = first
    # Training and held-out parts (data.test_fraction=0.2); final loss, accuracy, steps and
    # the held-out loss and accuracy on the model.
    assert [d[0] for d in datasets] == ["iris", "iris"] and len(set(datasets)) == 2
    assert model[1:] == ("READY", 5) and outputs == [model[0]]
    # A crash between the upload and its acknowledgement: the next sync sends it all again.
    journal = run_dir / JOURNAL_FILE
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if '"kind":"ack"' not in line))
    again = sync(workdir.path, "--uri", target, str(run_dir))
    assert again.returncode == 0 and f"to run {run.info.run_id} (" in again.stdout
    assert inputs_and_models() == first  # no second model, input or output
