"""A sweep's rows, CSV, report and exit status (numgrad.sweep.summary)."""

from __future__ import annotations

import json
import time

from numgrad.overrides import swept_values
from numgrad.sweep.jobs import FINISHED_NOT_SYNCED, write_job_status
from numgrad.sweep.progress import report
from numgrad.sweep.summary import (
    SweepOutcome,
    collect_rows,
    description,
    read_summary,
    write_summary,
    write_table,
)


def test_rows_cover_jobs_without_runs_and_runs_without_dirs(tmp_path):
    sweep_dir = tmp_path / "multirun"
    for num, status, extra in (
        (0, "FINISHED", {"final_loss": 0.5}),
        (1, "FAILED", {"error": "ConfigError: x"}),
    ):
        (sweep_dir / str(num) / ".hydra").mkdir(parents=True)
        (sweep_dir / str(num) / ".hydra" / "overrides.yaml").write_text(
            f"- optimizer.lr={num + 1}\n"
        )
        write_job_status(
            sweep_dir / str(num), [f"optimizer.lr={num + 1}"], status, job=num, **extra
        )
    (sweep_dir / "2" / ".hydra").mkdir(parents=True)  # started, never reported
    (sweep_dir / "2" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=3\n")

    def run(run_id, status, output_dir, metrics, overrides="", synced=True):
        # As the sweep's sender reports a job's run: a journal it sent, or a remote run.
        return {"run_id": run_id, "run_name": run_id, "status": status,
                "output_dir": str(output_dir), "overrides": overrides, "metrics": metrics,
                "synced": synced}  # fmt: skip

    children = [
        run("a", "FINISHED", sweep_dir / "0",
            {"final_loss": 0.5, "steps_taken": 3.0, "final_accuracy": 1.0}),
        run("r", "FINISHED", "/elsewhere/7", {"final_loss": 0.25}, "optimizer.lr=8"),  # remote job
    ]  # fmt: skip
    rows = collect_rows(sweep_dir, time.time() - 5, children, interrupted=False)
    assert [(r["job"], r["status"], r["run_id"]) for r in rows] == [
        (0, "FINISHED", "a"), (1, "FAILED", ""), (2, "FAILED", ""), (7, "FINISHED", "r"),
    ]  # fmt: skip
    assert rows[0]["steps_taken"] == 3 and rows[1]["error"] == "ConfigError: x"
    assert rows[3]["params"] == {"optimizer.lr": "8"}
    # Files from an earlier sweep in the same dir are not this sweep's jobs.
    assert collect_rows(sweep_dir, time.time() + 60, [], interrupted=True) == []
    # A job whose records its sweep could not send: finished, not synced.
    unsent = [run("a", "FINISHED", sweep_dir / "0", {}, synced=False)]
    rows = collect_rows(sweep_dir, time.time() - 5, unsent, interrupted=False)
    assert rows[0]["status"] == FINISHED_NOT_SYNCED and rows[0]["run_id"] == "a"


def row(job, status, loss=None, name=""):
    return {"job": job, "overrides": f"optimizer.lr={job}", "status": status,
            "final_loss": loss, "final_accuracy": None, "steps_taken": None,
            "grad_rel_error": None, "run_id": "", "run_name": name, "error": "",
            "output_dir": None, "params": {"optimizer.lr": str(job)}}  # fmt: skip


def test_exit_status_and_best_job():
    done = SweepOutcome("FINISHED", [row(0, "FINISHED", 0.5, "a"), row(1, "FINISHED", 0.25, "b")])
    assert done.exit_status == 0 and done.best()["run_name"] == "b"
    local = SweepOutcome("FINISHED", [row(0, "FINISHED", 0.5), row(1, FINISHED_NOT_SYNCED, 0.1)])
    assert local.exit_status == 75 and local.best()["job"] == 1 and not local.failed
    assert SweepOutcome("FINISHED", [row(0, "FINISHED")], parent_synced=False).exit_status == 75
    failed = SweepOutcome("FAILED", [row(0, "FAILED"), row(1, FINISHED_NOT_SYNCED, 0.1)])
    assert failed.exit_status == 1 and failed.best()["job"] == 1
    assert SweepOutcome("FAILED", []).best() is None


def test_a_stopped_sweep_counts_the_jobs_it_never_started(tmp_path, capsys):
    sweep_dir = tmp_path / "multirun"
    (sweep_dir / "0" / ".hydra").mkdir(parents=True)  # job 0 started, was killed
    (sweep_dir / "0" / ".hydra" / "overrides.yaml").write_text("- optimizer.lr=1\n")
    planned = [[f"optimizer.lr={lr}"] for lr in (1, 2, 3, 4)]
    rows = collect_rows(sweep_dir, time.time() - 5, [], interrupted=True, planned=planned)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        (0, "KILLED", "optimizer.lr=1"), (1, "NOT_STARTED", "optimizer.lr=2"),
        (2, "NOT_STARTED", "optimizer.lr=3"), (3, "NOT_STARTED", "optimizer.lr=4"),
    ]  # fmt: skip
    report(SweepOutcome("KILLED", rows, elapsed=2.5), [], None)
    out, err = capsys.readouterr()
    err = err.splitlines()
    assert err[0] == (
        "numgrad: sweep KILLED: 4 of 4 jobs did not finish (1 KILLED, 3 NOT_STARTED) in 2.5 s"
    )
    assert err[2] == "numgrad:   job 1 (optimizer.lr=2) NOT_STARTED"
    assert out.splitlines() == ["numgrad: no summary"]


def test_summary_csv_round_trips_and_names_every_parameter(tmp_path):
    rows = [row(0, "FINISHED", 0.1 + 0.2, "a"), row(1, "FAILED")]
    rows[1]["params"] = {"optimizer.lr": "1", "seed": "3"}
    back = read_summary(write_summary(rows, tmp_path / "s.csv"))
    assert float(back[0]["final_loss"]) == 0.1 + 0.2  # exact
    assert back[0]["seed"] == "" and back[1]["seed"] == "3"
    assert list(back[0])[-2:] == ["error", "output_dir"]


def test_the_parent_description_names_the_best_child(tmp_path):
    text = description(SweepOutcome("FAILED", [row(0, "FINISHED", 0.5, "lr=0"),
                                               row(1, "FINISHED", 0.25, "lr=1"),
                                               row(2, "FAILED")]), tmp_path)  # fmt: skip
    assert ": 3 jobs, 2 finished, 1 did not finish. Best: lr=1 (final loss 0.25)." in text


def test_a_study_of_h_names_the_best_h_of_each_scheme(tmp_path):
    rows = [row(i, "FINISHED", 0.6, f"job{i}") for i in range(4)]
    for r, (scheme, h, error) in zip(
        rows,
        [
            ("forward", "1e-5", 3e-6),
            ("forward", "1e-8", 6e-9),
            ("complex", "1e-5", 1e-11),
            ("complex", "1e-8", 1e-16),
        ],
        strict=True,
    ):
        r.update(scheme=scheme, grad_rel_error=error)
        r["params"] = {"gradient.scheme": scheme, "gradient.h": h}
    text = description(SweepOutcome("FINISHED", rows), tmp_path)
    assert (
        "Least gradient error per line: scheme=complex: h=1e-08 (rel. error 1e-16); "
        "scheme=forward: h=1e-08 (rel. error 6e-09). One row per job" in text
    )
    back = read_summary(write_summary(rows, tmp_path / "s.csv"))
    assert [b["scheme"] for b in back] == ["forward", "forward", "complex", "complex"]


def test_job_status_files_are_written_whole(tmp_path):
    from numgrad.sweep.jobs import JOB_STATUS_FILE, read_job_status

    write_job_status(tmp_path, ["a=1"], "FINISHED", final_loss=0.5)
    assert read_job_status(tmp_path / JOB_STATUS_FILE) == {
        "overrides": ["a=1"], "status": "FINISHED", "final_loss": 0.5,
    }  # fmt: skip
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.json").write_text("{not json")
    assert read_job_status(tmp_path / "bad.json") is None
    assert read_job_status(tmp_path / "missing.json") is None


def test_the_table_json_holds_the_csv_rows_with_ui_safe_columns(tmp_path):
    rows = [row(0, "FINISHED", 0.25, "a"), row(1, "FAILED", float("inf"), "b")]
    rows[1]["error"] = "Diverged: boom"
    csv_rows = read_summary(write_summary(rows, tmp_path / "s.csv"))
    table = json.loads(write_table(rows, tmp_path / "s.json").read_text())
    # A "." in a column name would leave the column empty in the UI's table view.
    assert sorted(table["columns"]) == sorted(name.replace(".", "/") for name in csv_rows[0])
    assert table["columns"][:4] == ["job", "run_name", "optimizer/lr", "status"]
    by_name = [dict(zip(table["columns"], cells, strict=True)) for cells in table["data"]]
    assert [(r["final_loss"], r["status"], r["optimizer/lr"], r["error"]) for r in by_name] == [
        (0.25, "FINISHED", "0", ""), (None, "FAILED", "1", "Diverged: boom"),
    ]  # numbers stay numbers; inf, which JSON cannot hold, is null  # fmt: skip
    as_text = {k: "" if v is None else repr(v) if isinstance(v, float) else str(v)
               for k, v in by_name[0].items()}  # fmt: skip
    assert as_text == {k.replace(".", "/"): v for k, v in csv_rows[0].items()}  # the CSV's cells


def test_the_best_job_is_the_one_of_least_held_out_loss_when_all_have_one(tmp_path):
    def row(job, loss, test_loss):
        return {"job": job, "overrides": f"seed={job}", "status": "FINISHED", "run_name": "",
                "final_loss": loss, "final_test_loss": test_loss, "final_test_accuracy": 0.9,
                "params": {}}  # fmt: skip

    # Job 0 fits its training data best; job 1 does best on the held-out part.
    outcome = SweepOutcome("FINISHED", [row(0, 0.1, 0.5), row(1, 0.2, 0.3)])
    assert outcome.best()["job"] == 1
    assert "Best: seed=1 (held-out loss 0.3)." in description(outcome, tmp_path)
    # Without a held-out loss for every finished job, the training loss decides.
    outcome = SweepOutcome("FINISHED", [row(0, 0.1, 0.5), row(1, 0.2, None)])
    assert outcome.best()["job"] == 0
    assert "Best: seed=0 (final loss 0.1)." in description(outcome, tmp_path)
    header = write_summary(outcome.rows, tmp_path / "s.csv").read_text().splitlines()[0]
    assert header.startswith("job,overrides,status,final_loss,final_accuracy,final_test_loss,"
                             "final_test_accuracy,")  # fmt: skip


def test_keys_every_job_sets_alike_are_not_columns(tmp_path):
    # numgrad -m optimizer.lr=0.1,1 data=blobs: lr is the sweep's axis, data=blobs its context
    # (still in every row's overrides). A one-job sweep keeps its keys: nothing varies there.
    def row(job, overrides):
        return {"job": job, "overrides": overrides, "status": "FINISHED", "run_name": "",
                "final_loss": 0.1, "params": swept_values(overrides.split())}  # fmt: skip

    rows = [row(0, "optimizer.lr=0.1 data=blobs"), row(1, "optimizer.lr=1 data=blobs")]
    csv_rows = read_summary(write_summary(rows, tmp_path / "s.csv"))
    assert "data" not in csv_rows[0] and [r["optimizer.lr"] for r in csv_rows] == ["0.1", "1"]
    assert [r["overrides"] for r in csv_rows] == ["optimizer.lr=0.1 data=blobs",
                                                  "optimizer.lr=1 data=blobs"]  # fmt: skip
    columns = json.loads(write_table(rows, tmp_path / "s.json").read_text())["columns"]
    assert "data" not in columns and "optimizer/lr" in columns
    alone = read_summary(write_summary(rows[:1], tmp_path / "one.csv"))
    assert (alone[0]["data"], alone[0]["optimizer.lr"]) == ("blobs", "0.1")
