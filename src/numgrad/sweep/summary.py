"""A sweep's summary: one row per job, ``sweep_summary.csv``, the best job.

A row comes from the job's folder (its ``.hydra/overrides.yaml`` and the status file
it left, :mod:`numgrad.sweep.jobs`) and from its MLflow run, where there is one: a job
that failed before its run existed has only its folder, a job on another machine only
its run, a job the sweep never started only its place in the sweeper's plan.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numgrad.command import FAILED, NOT_SYNCED
from numgrad.overrides import swept_values, varied_keys
from numgrad.plots.sweep import best_steps
from numgrad.sweep.jobs import FINISHED_NOT_SYNCED, JOB_STATUS_FILE, read_job_status

SUMMARY_FILE = "sweep_summary.csv"
TABLE_FILE = "sweep_summary.json"  # the same, as an MLflow table
NOT_STARTED = "NOT_STARTED"
NUMBERS = (
    "final_loss", "final_accuracy", "final_test_loss", "final_test_accuracy", "steps_taken",
    "grad_rel_error",
)  # fmt: skip
FIELDS = ("job", "overrides", "status", *NUMBERS, "dtype", "scheme", "run_id", "run_name")
DONE = ("FINISHED", FINISHED_NOT_SYNCED)
RANKING = ("final_test_loss", "final_loss")  # lower is better; held-out only if all have it
_key = os.path.realpath  # a job's folder, however its path was written (normalised too)


@dataclass
class SweepOutcome:
    """How a sweep ended: the parent's status and one row per job."""

    status: str
    rows: list[dict[str, Any]]
    summary: Path | None = None
    notes: list[str] = field(default_factory=list)
    parent_synced: bool = True
    parent_run_id: str | None = None
    offline: bool = False  # tracking.offline=true: records only local, by choice
    elapsed: float | None = None  # seconds from the sweep's start to its end
    signal: int | None = None  # the signal that stopped it (numgrad exits 128 + it)

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Rows of jobs that did not finish (failed, killed, never started)."""
        return [r for r in self.rows if r["status"] not in DONE]

    @property
    def exit_status(self) -> int:
        """1 when a job failed, else 75 when some records are only local (not by choice)."""
        if self.failed or self.status != "FINISHED":
            return FAILED
        if self.offline:
            return 0
        if not self.parent_synced or any(r["status"] == FINISHED_NOT_SYNCED for r in self.rows):
            return NOT_SYNCED
        return 0

    def best(self) -> dict[str, Any] | None:
        """The best finished job (:func:`best_job`), None if no job finished."""
        ranked = best_job(self.rows)
        return ranked[0] if ranked else None


def best_job(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """The finished job of least value in the first :data:`RANKING` column every finished
    job has (else the training loss), and that column; None when none has any.

    Examples
    --------
    >>> best_job([{"status": "FINISHED", "final_loss": 0.5}, {"status": "FAILED", "final_loss": 0}])
    ({'status': 'FINISHED', 'final_loss': 0.5}, 'final_loss')
    """
    done = [r for r in rows if r["status"] in DONE]
    for column in RANKING:
        ranked = [r for r in done if _finite(r.get(column))]
        if ranked and (len(ranked) == len(done) or column == RANKING[-1]):
            return min(ranked, key=lambda r: r[column]), column
    return None


def collect_rows(
    sweep_dir: Path,
    started: float,
    children: Sequence[Mapping[str, Any]],
    *,
    interrupted: bool,
    planned: Sequence[Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """One row per job: from its folder and status file, its child run, or the plan.

    Files older than the sweep (``started``, epoch seconds) belong to an earlier sweep
    in the same ``hydra.sweep.dir`` and are ignored. ``planned`` is the sweeper's job
    list, when known: jobs of it with no trace at all are rows ``NOT_STARTED``.
    """
    rows: dict[str, dict[str, Any]] = {}
    recent = started - 0.01  # another sweep may have ended less than a second before
    if sweep_dir.is_dir():
        for path in sweep_dir.glob("*/.hydra/overrides.yaml"):
            if path.stat().st_mtime >= recent:
                job_dir = path.parent.parent
                rows.setdefault(_key(job_dir), _empty_row(job_dir))["overrides_list"] = (
                    _read_overrides(path)
                )
        for path in sweep_dir.glob(f"*/{JOB_STATUS_FILE}"):
            record = read_job_status(path) if path.stat().st_mtime >= recent else None
            if record is not None:
                _merge_status(rows.setdefault(_key(path.parent), _empty_row(path.parent)), record)
    for run in children:
        _merge_run(rows, run)
    out = [_finish_row(row, interrupted) for row in rows.values()]
    seen = {r["job"] for r in out}
    for number, overrides in enumerate(planned or ()):
        if number not in seen:
            row = _empty_row(None)
            row.update(job=number, overrides_list=list(overrides), status=NOT_STARTED)
            out.append(_finish_row(row, interrupted))
    out.sort(key=lambda r: (r["job"] is None, r["job"] or 0, r["overrides"]))
    return out


def _merge_status(row: dict[str, Any], record: Mapping[str, Any]) -> None:
    row["overrides_list"] = list(record.get("overrides") or row["overrides_list"])
    row["status"] = record.get("status")
    row["error"] = record.get("error") or ""
    for key in (*NUMBERS, "dtype", "scheme", "run_id", "run_name"):
        if record.get(key) is not None:
            row[key] = record[key]
    if record.get("job") is not None:
        row["job"] = int(record["job"])


def _merge_run(rows: dict[str, dict[str, Any]], run: Mapping[str, Any]) -> None:
    """A job's run as the sweep's sender found it (a journal it sent, or a remote run)."""
    where = run.get("output_dir")
    row = rows.setdefault(_key(Path(where)) if where else run["run_id"], _empty_row(None))
    row["run_id"] = run.get("run_id") or row["run_id"]
    row["run_name"] = row["run_name"] or run.get("run_name") or ""
    if not row["overrides_list"]:
        row["overrides_list"] = (run.get("overrides") or "").split()
    if row["status"] is None:  # the job's own record wins; else the run's status
        row["status"] = run.get("status")
    if row["status"] == "FINISHED" and not run.get("synced", True):
        row["status"] = FINISHED_NOT_SYNCED  # in its journal, not (yet) in the store
    if not row["error"]:
        row["error"] = run.get("error") or ""
    for key, value in (run.get("metrics") or {}).items():
        if key in NUMBERS and row[key] is None:
            row[key] = float(value)
    row["dtype"] = row["dtype"] or (run.get("params") or {}).get("gradient.dtype", "")
    row["scheme"] = row["scheme"] or (run.get("params") or {}).get("gradient.scheme", "")
    if row["output_dir"] is None and where:
        row["output_dir"] = where


def _finish_row(row: dict[str, Any], interrupted: bool) -> dict[str, Any]:
    if row["status"] is None:  # started, never reported: stopped by Ctrl-C or a crash
        row["status"] = "KILLED" if interrupted else "FAILED"
    if row["job"] is None and row["output_dir"] and Path(row["output_dir"]).name.isdigit():
        row["job"] = int(Path(row["output_dir"]).name)
    if row["steps_taken"] is not None:
        row["steps_taken"] = int(row["steps_taken"])
    row["overrides"] = " ".join(row.pop("overrides_list"))
    row["params"] = swept_values(row["overrides"].split())
    return row


def _empty_row(job_dir: Path | None) -> dict[str, Any]:
    return {
        "job": int(job_dir.name) if job_dir is not None and job_dir.name.isdigit() else None,
        "overrides_list": [], "status": None, **dict.fromkeys(NUMBERS), "dtype": "", "scheme": "",
        "run_id": "", "run_name": "", "error": "",
        "output_dir": str(job_dir) if job_dir is not None else None,
    }  # fmt: skip


def _read_overrides(path: Path) -> list[str]:
    import yaml

    try:
        return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return []


def write_summary(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``sweep_summary.csv``: one row per job, a column per swept parameter, floats exact.

    Examples
    --------
    >>> import tempfile
    >>> rows = [{"job": 0, "overrides": "optimizer.lr=0.1", "status": "FINISHED",
    ...          "final_loss": 0.25, "final_accuracy": 1.0, "steps_taken": 3,
    ...          "grad_rel_error": None, "run_id": "abc", "run_name": "lr=0.1", "error": "",
    ...          "output_dir": "/x/0", "params": {"optimizer.lr": "0.1"}}]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     print(write_summary(rows, Path(d) / "s.csv").read_text().splitlines()[1])
    ...     table = json.loads(write_table(rows, Path(d) / "s.json").read_text())
    0,optimizer.lr=0.1,FINISHED,0.25,1.0,,,3,,,,abc,lr=0.1,0.1,,/x/0
    >>> table["columns"][:5]
    ['job', 'run_name', 'optimizer/lr', 'status', 'final_loss']
    >>> table["data"][0][:10]
    [0, 'lr=0.1', '0.1', 'FINISHED', 0.25, 1.0, None, None, 3, None]
    """
    header, body = _table(rows)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([_cell(v) for v in cells] for cells in body)
    tmp.replace(path)
    return path


def write_table(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``sweep_summary.json``: the summary as an MLflow table, which the UI's artifact view
    shows as a sortable table (with the parent's ``mlflow.loggedArtifacts`` tag).

    The JSON of ``MlflowClient.log_table`` (columns and rows): the CSV's cells, the job,
    its run name, the swept values and the outcome first. Numbers stay numbers, a
    non-finite one is null. A ``.`` in a column name leaves the column empty in the UI
    (MLflow 3.17 reads it as a nested path): ``optimizer.lr`` is written ``optimizer/lr``.
    """
    header, body = _table(rows)
    # What a reviewer compares first: the job, its name, the swept values, the outcome.
    first = ["job", "run_name", *header[len(FIELDS) : -2], "status", *NUMBERS]
    order = [header.index(name) for name in first + [h for h in header if h not in first]]
    table = {
        "columns": [header[i].replace(".", "/") for i in order],
        "data": [[_json_value(cells[i]) for i in order] for cells in body],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(table, allow_nan=False))
    tmp.replace(path)
    return path


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The summary's columns and its rows' values, for the CSV and the JSON alike."""
    keys = varied_keys([row["params"] for row in rows])  # the sweep's axes, not its context
    header = [*FIELDS, *keys, "error", "output_dir"]
    body = [
        [row.get(k) for k in FIELDS]
        + [row["params"].get(k, "") for k in keys]
        + [row.get("error") or "", row.get("output_dir") or ""]
        for row in rows
    ]
    return header, body


def read_summary(path: Path | str) -> list[dict[str, str]]:
    """The rows of a ``sweep_summary.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def description(outcome: SweepOutcome, sweep_dir: Path) -> str:
    """The parent run's description in the MLflow UI: the sweep, its count, its best job."""
    done = sum(r["status"] in DONE for r in outcome.rows)
    command = shlex.join(["numgrad", *sys.argv[1:]])
    text = (
        f"Sweep `{command}`: {len(outcome.rows)} jobs, {done} finished, "
        f"{len(outcome.rows) - done} did not finish."
    )
    ranked = best_job(outcome.rows)
    if ranked is not None:
        best, column = ranked
        name = best["run_name"] or best["overrides"] or f"job {best['job']}"
        what = {"final_loss": "final loss", "final_test_loss": "held-out loss"}.get(column, column)
        text += f" Best: {name} ({what} {best[column]:.6g})."
    if steps := best_steps(outcome.rows):  # a study of h: the best h of each scheme
        text += f" {steps}"
    return text + f" One row per job in `{SUMMARY_FILE}`; sweep dir `{sweep_dir}`."
