"""A sweep stopped by a signal: before its first job, during its jobs, in its end.

The whole-process tests start the installed ``numgrad -m`` in a process group of its
own and signal the group (``os.killpg``), as a terminal's Ctrl-C, ``timeout`` and
``docker stop`` do: the sweep's main process and its joblib workers get the signal at
once. Each waits for a mark on disk (a journal, a status file), not for a guessed
delay, and then reads the store back: one parent, its children, their statuses,
stop reasons, artifacts and points, the summary, the exit status, and that
``numgrad-sync`` afterwards adds nothing.
"""

from __future__ import annotations

import csv
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from numgrad import signals
from numgrad.sweep import stopping
from numgrad.sweep.jobs import read_job_status
from numgrad.tracking.journal import JOURNAL_FILE, JournalError, read_journal
from numgrad.tracking.records import sampled_steps
from tests.conftest import numgrad_env, running, wait_for
from tests.test_sweeps import artifacts, summary, sweep_runs

STOP_REASON = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
LAST_LINE = {signal.SIGINT: "numgrad: interrupted", signal.SIGTERM: "numgrad: terminated"}
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
LONG = ("optimizer.steps=1000000", "tracking.flush_seconds=0.2")


# ------------------------------------------------------------------------ quick


def test_the_mark_stops_jobs_and_a_new_sweep_clears_it(tmp_path):
    assert stopping.stopping(tmp_path, worker=False) is None
    stopping.mark(tmp_path, signal.SIGINT)
    assert stopping.stopping(tmp_path, worker=False) == signal.SIGINT
    stopping.clear(tmp_path)
    assert stopping.stopping(tmp_path, worker=False) is None
    stopping.mark(tmp_path / "missing", signal.SIGTERM)  # no sweep dir yet: nothing to mark


def test_a_signal_in_an_absorbing_hold_is_handed_over_not_raised():
    with signals.raising():
        with signals.held(absorb=True) as caught:
            signal.raise_signal(signal.SIGINT)
            assert signals.pending() == signal.SIGINT  # seen inside, not raised
        assert caught == [signal.SIGINT] and signals.pending() is None
        with pytest.raises(signals.Terminated):  # an outer hold still raises its own
            with signals.held():
                signal.raise_signal(signal.SIGTERM)
                with signals.held(absorb=True) as inner:
                    pass
        assert inner == []


def test_a_blocked_signal_waits_and_reaches_the_process_inside_raising():
    # A pool worker has one thread; here the signal goes to this thread alone.
    with signals.raising(), signals.blocked():
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(0.05)
        assert signal.SIGTERM in signal.sigpending()  # blocked: waiting, not raised
        with pytest.raises(signals.Terminated):
            with signals.raising():  # a job: here it arrives
                time.sleep(1)
    assert signals.received() == signal.SIGTERM


# ---------------------------------------------------------------- whole process


def _start(workdir, *overrides: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        workdir.argv(*overrides, multirun=True), cwd=workdir.path, env=numgrad_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )  # fmt: skip


def _signal_group(proc: subprocess.Popen[str], sig: int) -> tuple[str, str]:
    os.killpg(proc.pid, sig)
    return proc.communicate(timeout=180)


def _metric_entries(journal: Path) -> int:
    try:
        return sum(e["kind"] == "metrics" for e in read_journal(journal).entries)
    except (OSError, JournalError):
        return 0


def _journal_steps(journal: Path, key: str = "loss") -> list[int]:
    entries = read_journal(journal).entries
    return [m[3] for e in entries if e["kind"] == "metrics" for m in e["metrics"] if m[0] == key]


def _check_after_sync(workdir, parent, children) -> None:
    """``numgrad-sync`` afterwards finds everything sent: no second parent, nothing new."""
    sync = subprocess.run(["numgrad-sync", str(workdir.path / "multirun")], cwd=workdir.path,
                          env=numgrad_env(MLFLOW_TRACKING_URI=workdir.uri), capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    _, parent2, children2 = sweep_runs(workdir.uri)  # exactly one parent
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "KILLED"
    before = {c.info.run_id: (c.info.status, c.data.metrics) for c in children}
    assert {c.info.run_id: (c.info.status, c.data.metrics) for c in children2} == before


def _no_false_outage(err: str, sweep_dir: Path) -> None:
    logs = [err, *(p.read_text() for p in sweep_dir.glob("*/numgrad.log"))]
    assert not any("unreachable" in text for text in logs), logs
    assert not any("Traceback" in text for text in logs), logs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "jobs", "workers"),
    [(signal.SIGINT, 4, 2), (signal.SIGTERM, 4, 2), (signal.SIGINT, 2, 3)],
    ids=["SIGINT-queued-jobs", "SIGTERM-queued-jobs", "SIGINT-idle-worker"],
)
def test_a_group_signal_mid_sweep_ends_every_started_job_whole(workdir, sig, jobs, workers):
    # Two jobs run; with 4 jobs two wait in the queue, with 3 workers one never gets a
    # job (its death would make loky kill the two others at once).
    lrs = ",".join(str(0.1 * (i + 1))[:3] for i in range(jobs))
    proc = _start(workdir, f"optimizer.lr={lrs}", *LONG, "hydra/launcher=joblib",
                  f"hydra.launcher.n_jobs={workers}")  # fmt: skip
    sweep_dir = workdir.path / "multirun"
    journals = [sweep_dir / str(n) / JOURNAL_FILE for n in range(2)]
    with running(proc):
        wait_for(lambda: all(_metric_entries(j) >= 2 for j in journals) or proc.poll(), 180)
        assert proc.poll() is None
        _, err = _signal_group(proc, sig)
    assert proc.returncode == EXIT[sig], err
    assert err.strip().splitlines()[-1] == LAST_LINE[sig]
    _no_false_outage(err, sweep_dir)
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["numgrad.stop_reason"] == STOP_REASON[sig]
    assert len(children) == 2  # the two running jobs; no queued job started
    planned = sorted(sampled_steps(1_000_000, 1000))
    for child in children:
        assert child.info.status == "KILLED"
        assert child.data.tags["numgrad.stop_reason"] == STOP_REASON[sig]
        job_dir = Path(child.data.tags["numgrad.output_dir"])
        stored = sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss"))
        assert stored == _journal_steps(job_dir / JOURNAL_FILE)  # all it journaled, once
        assert stored[:-1] == planned[: len(stored) - 1] and len(stored) >= 2
        with open(job_dir / "artifacts" / "history.csv") as f:
            rows = list(csv.reader(f))
        assert int(rows[-1][0]) == stored[-1]  # the last step, also after the last flush
        names = artifacts(client, child.info.run_id)
        assert {"history.csv", "weights/W_final.npy", "weights/W_init.npy"} <= names
        assert any(n.startswith("figures/") for n in names)
        W = np.load(client.download_artifacts(child.info.run_id, "weights/W_final.npy"))
        assert W.shape == (2, 3) and np.isfinite(W).all()
    rows = summary(client, parent)
    assert [r["status"] for r in rows] == ["KILLED"] * 2 + ["NOT_STARTED"] * (jobs - 2)
    assert [r["job"] for r in rows] == [str(n) for n in range(jobs)]
    for n in range(2, jobs):  # refused at its start, or never handed to a worker
        assert not (sweep_dir / str(n) / JOURNAL_FILE).exists()
        record = read_job_status(sweep_dir / str(n) / "numgrad_job.json")
        assert record is None or record["status"] == "NOT_STARTED"
    _check_after_sync(workdir, parent, children)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "launcher"), [(signal.SIGINT, "basic"), (signal.SIGTERM, "joblib")],
    ids=["SIGINT-basic", "SIGTERM-joblib"],
)  # fmt: skip
def test_a_group_signal_before_the_first_job_on_a_new_store(workdir, sig, launcher):
    # The parent's journal is written and its sender started; the sender is still
    # making the new store's tables (seconds), which the sweep waits for before any job.
    proc = _start(workdir, "optimizer.lr=0.1,0.2", *LONG, f"hydra/launcher={launcher}")
    sweep_dir = workdir.path / "multirun"
    with running(proc):
        wait_for(lambda: proc.poll() is not None or _sender(proc), 120, 0.01)
        assert proc.poll() is None and not (sweep_dir / "0").exists()
        _, err = _signal_group(proc, sig)
    assert proc.returncode == EXIT[sig], err
    assert err.strip().splitlines()[-1] == LAST_LINE[sig]
    _no_false_outage(err, sweep_dir)
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "KILLED" and children == []
    assert parent.data.tags["numgrad.stop_reason"] == STOP_REASON[sig]
    rows = summary(client, parent)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "NOT_STARTED"), ("1", "NOT_STARTED")]
    _check_after_sync(workdir, parent, children)


def _sender(proc: subprocess.Popen[str]) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children():
        try:
            if "numgrad.sweep.sender_process" in " ".join(child.cmdline()):
                return child
        except psutil.Error:  # a child that ended meanwhile (Hydra's, the sweep's probe)
            continue
    return None


def _asked(sender: psutil.Process) -> bool:
    """Whether the sweep wrote a command (``drain``, at its end) the stopped sender has not
    read yet: bytes waiting in the sender's stdin pipe."""
    fd = os.open(f"/proc/{sender.pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] > 0
    finally:
        os.close(fd)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "launcher"), [(signal.SIGINT, "joblib"), (signal.SIGTERM, "basic")],
    ids=["SIGINT-joblib", "SIGTERM-basic"],
)  # fmt: skip
def test_a_group_signal_in_the_sweeps_end_phase(workdir, sig, launcher):
    # The sender is stopped (SIGSTOP) once the store exists: the jobs only journal,
    # and the sweep's end waits for the sender's answer; the signal comes once the end
    # has asked for it, in that wait. The sender runs in a session of its own,
    # so the group signal does not reach it; it is woken right after.
    proc = _start(workdir, "optimizer.lr=0.1,0.2", "optimizer.steps=300",
                  f"hydra/launcher={launcher}")  # fmt: skip
    sweep_dir = workdir.path / "multirun"
    with running(proc):
        sender = wait_for(lambda: (sweep_dir / "0").exists() and _sender(proc), 120, 0.05)
        sender.suspend()
        try:
            wait_for(lambda: all((sweep_dir / n / "numgrad_job.json").exists() for n in "01"), 120)
            wait_for(lambda: _asked(sender), 120)  # the end began: it asked for the jobs' state
            assert proc.poll() is None
            os.killpg(proc.pid, sig)
            time.sleep(0.5)
        finally:
            sender.resume()
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT[sig], err
    assert err.strip().splitlines()[-1] == LAST_LINE[sig]
    _no_false_outage(err, sweep_dir)
    assert "sweep summary incomplete" not in err
    assert "numgrad: sweep KILLED: all 2 jobs finished (2 FINISHED) in " in err
    client, parent, children = sweep_runs(workdir.uri)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["numgrad.stop_reason"] == STOP_REASON[sig]
    # It came in the end: nothing stopped the launcher (that would be the parent's error).
    assert "numgrad.error" not in parent.data.tags
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    rows = summary(client, parent)
    assert [r["status"] for r in rows] == ["FINISHED", "FINISHED"]
    assert (sweep_dir / "sweep_summary.csv").is_file()
    _check_after_sync(workdir, parent, children)
