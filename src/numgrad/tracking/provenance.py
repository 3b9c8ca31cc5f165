"""Who ran a run: its tags, its git commit, and whether a RUNNING run is an orphan.

Plain Python (no mlflow import): the tags go into a run's journal before any store
is contacted, and the orphan checks read a run's ``numgrad.host``/``numgrad.pid``
tags, whoever fetched them.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from numgrad.processes import alive, writer_gone

PARENT_RUN_ENV = "NUMGRAD_PARENT_RUN_ID"  # set by a sweep for its jobs
PARENT_JOURNAL_ENV = "NUMGRAD_PARENT_JOURNAL"  # the sweep parent's journal (offline sweeps)
SENDER_ENV = "NUMGRAD_SWEEP_SENDER"  # a local sweep's store: its sender sends the jobs' journals
#: On a run created for a journal whose writer is gone: the pid of the process uploading it
#: (numgrad-sync, a sweep's sender). While that process lives, the run is not an orphan.
UPLOADER_TAG = "numgrad.uploader_pid"

#: Runs open in this process: the orphan check must not take a reused worker's own
#: earlier-started run (same pid) for a dead one.
ACTIVE_RUNS: set[str] = set()


def base_tags() -> dict[str, str]:
    """Tags every numgrad run carries: who, where, which process, which commit."""
    tags = {
        "mlflow.user": _user(),
        "mlflow.source.name": "numgrad",
        "mlflow.source.type": "LOCAL",
        "numgrad.host": socket.gethostname(),
        "numgrad.pid": str(os.getpid()),
    }
    commit = git_commit()
    if commit:
        tags["numgrad.git_commit"] = tags["mlflow.source.git.commit"] = commit
    return tags


def run_tags(config: Mapping[str, Any], overrides: list[str], output_dir: Path) -> dict[str, str]:
    """Tags of one run: what it was asked, where it ran, its sweep, what it goes on from."""
    from numgrad.tracking.records import fit_tag

    tags = {
        "numgrad.overrides": fit_tag(" ".join(overrides), "<see overrides.yaml>"),
        "numgrad.output_dir": fit_tag(str(output_dir)),
    }
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    net = config.get("net") or {}
    if net.get("init") == "run" and net.get("from_run"):  # W0 is that run's W_final
        tags["numgrad.warm_start_from"] = str(net["from_run"])
    if config.get("rerun_of"):  # started by numgrad-rerun
        tags["numgrad.rerun_of"] = str(config["rerun_of"])
    return tags


def parent_journal(output_dir: Path) -> dict[str, str]:
    """The sweep parent's journal, relative to a job's dir (how numgrad-sync links them)."""
    parent = os.environ.get(PARENT_JOURNAL_ENV)
    return {"parent_journal": os.path.relpath(parent, output_dir)} if parent else {}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@functools.cache
def git_commit() -> str | None:
    """The commit of the git checkout numgrad runs from (``git rev-parse HEAD``).

    None for an installed copy (under site-packages: the repository around a venv is
    not the code that ran), without git, or outside a repository.
    """
    here = Path(__file__).resolve().parent
    if any(part in ("site-packages", "dist-packages") for part in here.parts):
        return None
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and len(commit) in (40, 64) else None


def orphaned(run: Any) -> bool:
    """True when a RUNNING MLflow run's process on this host is gone (or its pid was reused).

    A run of this very process is orphaned unless it is still open here (a reused
    worker process's earlier run).
    """
    tags = run.data.tags
    same_host = tags.get("numgrad.host") == socket.gethostname()
    if same_host and tags.get("numgrad.pid") == str(os.getpid()):
        return run.info.run_id not in ACTIVE_RUNS
    uploader = tags.get(UPLOADER_TAG, "")
    if same_host and uploader.isdigit() and alive(int(uploader)):
        return False  # its writer is gone, but another process is filling it right now
    return writer_gone(tags, run.info.start_time)
