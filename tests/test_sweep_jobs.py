"""A sweep job's status file and the error Hydra hands back for a failed job (numgrad.sweep.jobs)."""

from __future__ import annotations

import hydra
from hydra.core.utils import JobReturn, JobStatus

from numgrad.config import ConfigError
from numgrad.sweep.jobs import JOB_STATUS_FILE, job_error, read_job_status, write_job_status


def test_a_failed_jobs_error_comes_back_without_hydras_stderr_line(capsys):
    failed = JobReturn(overrides=["optimizer.lr=-1"])
    failed.return_value = error = ConfigError("optimizer.lr", -1.0, "must be > 0")
    failed.status = JobStatus.FAILED
    done = JobReturn(overrides=["optimizer.lr=1"])
    done.return_value, done.status = 0.25, JobStatus.COMPLETED
    version = f"hydra-core {hydra.__version__}"
    assert job_error(failed) is error, f"{version}: JobReturn.return_value no longer raises"
    assert job_error(done) is None, version
    assert capsys.readouterr() == ("", ""), f"{version}: its stderr line leaked"
    # and the public property still does what job_error relies on
    import pytest

    with pytest.raises(ConfigError):
        failed.return_value  # noqa: B018
    assert "Error executing job" in capsys.readouterr().err, version


def test_a_status_file_is_written_whole_and_read_back(tmp_path):
    path = write_job_status(tmp_path, ["seed=1"], "FINISHED", final_loss=0.5, job=3)
    assert path == tmp_path / JOB_STATUS_FILE
    assert read_job_status(path) == {
        "overrides": ["seed=1"], "status": "FINISHED", "final_loss": 0.5, "job": 3,
    }  # fmt: skip
    assert not list(tmp_path.glob("*.tmp"))
    path.write_text("[1, 2]")  # not a record
    assert read_job_status(path) is None
    assert read_job_status(tmp_path / "missing.json") is None
