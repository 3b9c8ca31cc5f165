"""The status file a sweep job leaves in its output dir, for the sweep to read back.

A job's process may be the sweep's own (basic launcher), a pool worker (joblib) or
another machine (Ray): the file is how its outcome reaches the sweep's summary, also
for a job that failed before any MLflow run existed.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     _ = write_job_status(Path(d), ["optimizer.lr=0.1"], "FINISHED", final_loss=0.25, job=0)
...     read_job_status(Path(d) / JOB_STATUS_FILE)["final_loss"]
0.25
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

JOB_STATUS_FILE = "numgrad_job.json"

#: Job statuses besides MLflow's own: the run finished, but its records are only in its
#: local journal (the tracking store was unreachable at its end; ``numgrad-sync`` uploads).
FINISHED_NOT_SYNCED = "FINISHED_NOT_SYNCED"


def write_job_status(output_dir: Path, overrides: list[str], status: str, **fields: Any) -> Path:
    """Write ``numgrad_job.json`` into ``output_dir`` atomically (a reader never sees half)."""
    record = {"overrides": list(overrides), "status": status, **fields}
    path = output_dir / JOB_STATUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return path


def read_job_status(path: Path) -> dict[str, Any] | None:
    """The record in a job status file; None when it is missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def job_error(job_return: Any) -> BaseException | None:
    """The exception a failed job raised, from Hydra's ``JobReturn``; None if it did not fail.

    Hydra's public ``return_value`` re-raises it after writing "Error executing job with
    overrides" to stderr, its own launcher's report; numgrad reports the job itself, so
    that line is kept out of the user's way.
    """
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            job_return.return_value  # noqa: B018 (the property raises the job's error)
    except Exception as exc:
        return exc
    return None


def record_failure(config: Any, job_return: Any) -> None:
    """In Hydra's ``on_job_end``: a job that failed with an unexpected exception, in its
    status file (:func:`numgrad.cli.job` writes it for the others)."""
    from hydra.core.utils import JobStatus

    from numgrad.tracking.records import describe_error

    output_dir = Path(str(config.hydra.runtime.output_dir))
    if job_return.status != JobStatus.FAILED or (output_dir / JOB_STATUS_FILE).exists():
        return
    exc = job_error(job_return)
    with contextlib.suppress(OSError):
        write_job_status(
            output_dir, list(job_return.overrides or []), "FAILED",
            error=describe_error(exc), job=int(config.hydra.job.num), pid=os.getpid(),
        )  # fmt: skip
