"""A joblib sweep whose sender, or whose own process, is SIGKILLed: what the store holds.

Whole-process tests: the installed ``numgrad -m … hydra/launcher=joblib`` runs in a
subprocess; the sender (found among the sweep's processes by its command line) or the
sweep itself is SIGKILLed at several moments. Afterwards, and again after a
``numgrad-sync``, the real SQLite store is read back: one parent, every child under
it, no run twice, no run RUNNING, every journaled point stored once, and none of the
sweep's processes left running.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from numgrad.sweep.jobs import JOB_STATUS_FILE
from numgrad.sweep.summary import read_summary
from numgrad.tracking.journal import JOURNAL_FILE, read_journal
from tests.conftest import NUMGRAD, numgrad_env, store_rows, wait_for

pytestmark = pytest.mark.slow

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
LRS = "optimizer.lr=0.1,0.2,0.3,0.4"
SENDER = "numgrad.sweep.sender_process"


class Sweep:
    """A ``numgrad -m`` subprocess, its output in files (an orphan holding a pipe would
    keep a reader waiting), and every process of its family seen while it ran."""

    def __init__(self, workdir, *overrides: str) -> None:
        self.workdir, self.sweep_dir = workdir, workdir.path / "multirun"
        self.err_path = workdir.path / "sweep.err"
        with open(workdir.path / "sweep.out", "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                workdir.argv(*overrides, *JOBLIB, "tracking.flush_seconds=0.2", multirun=True),
                cwd=workdir.path, env=numgrad_env(), stdout=out, stderr=err,
            )  # fmt: skip
        self.seen: dict[int, psutil.Process] = {}

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def family(self) -> list[psutil.Process]:
        """The sweep's live descendants, remembered for the end of the test."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        return [p for p in self.seen.values() if _alive(p)]

    def senders(self) -> list[psutil.Process]:
        return [p for p in self.family() if SENDER in " ".join(_cmdline(p))]

    def kill_sender(self) -> int | None:
        """SIGKILL the sweep's sender, once there is one; its pid (None: the sweep ended)."""
        found = wait_for(lambda: self.senders() or self.proc.poll() is not None, timeout=60)
        if found is True:
            return None
        (sender,) = found
        sender.kill()
        return sender.pid

    def points(self, n: int) -> bool:
        """Does some child run hold at least ``n`` loss values in the store?"""
        self.family()
        rows = store_rows(self.workdir.store, "select count(*) from metrics where key = 'loss' "
                          "group by run_uuid order by 1 desc limit 1")  # fmt: skip
        return bool(rows) and rows[0][0] >= n

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.family()
            time.sleep(0.1)
        return self.proc.wait(timeout=1)

    def none_left(self, timeout: float = 30) -> None:
        """Every process of the family ends within ``timeout`` s (and is killed after)."""
        try:
            wait_for(lambda: not [p for p in self.seen.values() if _alive(p)], timeout=timeout)
        except AssertionError:
            left = [(p.pid, _cmdline(p)[:4]) for p in self.seen.values() if _alive(p)]
            raise AssertionError(f"still running after {timeout} s: {left}") from None
        finally:
            for p in self.seen.values():  # only processes this test started
                with contextlib.suppress(psutil.Error):
                    if _alive(p):
                        p.kill()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def stored(db: Path) -> dict[str, dict]:
    """Every run of the store: status and tags, read with sqlite3."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=20)
    try:
        runs = {rid: {"status": s, "tags": {}} for rid, s in con.execute(
            "select run_uuid, status from runs")}  # fmt: skip
        for rid, key, value in con.execute("select run_uuid, key, value from tags"):
            runs[rid]["tags"][key] = value
        twice = con.execute("select run_uuid, key, step from metrics group by run_uuid, key, "
                            "step having count(*) > 1").fetchall()  # fmt: skip
        for rid in runs:
            runs[rid]["loss_steps"] = sorted(s for (s,) in con.execute(
                "select step from metrics where run_uuid = ? and key = 'loss'", (rid,)))  # fmt: skip
    finally:
        con.close()
    assert twice == [], f"points stored twice: {twice[:5]}"
    return runs


def journaled_loss_steps(journal: Path) -> list[int]:
    entries = read_journal(journal).entries
    return sorted(m[3] for e in entries if e["kind"] == "metrics" for m in e["metrics"]
                  if m[0] == "loss")  # fmt: skip


def check_store(sweep: Sweep, parent_status: str, others: int = 0) -> dict[str, dict]:
    """One parent, each job's journal in exactly one child under it with every journaled
    point, nothing RUNNING, ``others`` runs besides; the children by job number."""
    runs = stored(sweep.workdir.store)
    parents = [r for r, v in runs.items() if v["tags"].get("numgrad.kind") == "sweep"]
    assert len(parents) == 1, runs
    (parent,) = parents
    assert runs[parent]["status"] == parent_status
    assert {v["status"] for v in runs.values()} & {"RUNNING"} == set(), runs
    keys = [v["tags"].get("numgrad.journal_key") for v in runs.values()]
    assert len(keys) == len(set(keys)), "a journal made two runs"
    by_key = {v["tags"]["numgrad.journal_key"]: (rid, v) for rid, v in runs.items()}
    children = {}
    for journal in sorted(sweep.sweep_dir.glob(f"*/{JOURNAL_FILE}")):
        rid, run = by_key[read_journal(journal).start["key"]]
        assert run["tags"]["mlflow.parentRunId"] == parent
        assert run["loss_steps"] == journaled_loss_steps(journal)  # every point, once
        children[int(journal.parent.name)] = (rid, run)
    assert len(runs) == 1 + len(children) + others  # no run that no journal here made
    return children


def sync_changes_nothing_but_completes(
    sweep: Sweep, parent_status: str, others: int = 0
) -> dict[str, dict]:
    """``numgrad-sync`` of the sweep dir: exit 0, the same runs, the same state."""
    before = stored(sweep.workdir.store)
    proc = subprocess.run([NUMGRAD + "-sync", str(sweep.sweep_dir)], cwd=sweep.workdir.path,
                          env=numgrad_env(), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = stored(sweep.workdir.store)
    assert set(after) == set(before)  # no second parent, no second child
    return check_store(sweep, parent_status, others)


# --------------------------------------------------------------- the sender killed


@pytest.mark.parametrize("when", ["parent_made", "children_sending", "twice", "jobs_done"])
def test_a_killed_sender_is_replaced_and_the_store_holds_the_whole_sweep(workdir, when):
    sweep = Sweep(workdir, LRS, "optimizer.steps=20000")
    killed = []
    try:
        if when == "parent_made":  # the sender has made the parent, no child yet
            wait_for(lambda: store_rows(workdir.store, "select count(*) from runs") == [(1,)],
                     timeout=120, every=0.05)  # fmt: skip
        elif when == "jobs_done":  # the sweep's end phase: drain and finish
            wait_for(lambda: len(list(sweep.sweep_dir.glob(f"*/{JOB_STATUS_FILE}"))) == 4,
                     timeout=240, every=0.05)  # fmt: skip
        else:
            wait_for(lambda: sweep.points(3), timeout=120)
        killed.append(sweep.kill_sender())
        if when == "twice":  # its successor too, once it has gone on sending
            time.sleep(3)
            killed.append(sweep.kill_sender())
        code = sweep.wait()
        err = sweep.err
    finally:
        sweep.none_left()
    assert code == 0, err
    assert "unreachable" not in err
    if when != "jobs_done":  # there, the sender may have been done already
        assert None not in killed
        for pid in killed:
            assert f"sender (pid {pid}) died (killed by signal 9); started another" in err
    children = check_store(sweep, "FINISHED")
    assert sorted(children) == [0, 1, 2, 3]
    assert {run["status"] for _, run in children.values()} == {"FINISHED"}
    assert all(len(run["loss_steps"]) == 1000 for _, run in children.values())  # max_points
    rows = read_summary(sweep.sweep_dir / "sweep_summary.csv")
    assert [(int(r["job"]), r["status"], r["run_id"]) for r in rows] == [
        (job, "FINISHED", children[job][0]) for job in range(4)
    ]
    sync_changes_nothing_but_completes(sweep, "FINISHED")


def test_a_sender_that_keeps_dying_gives_way_to_the_sweep_itself(workdir):
    # After six senders have died the sweep stops replacing them, says so, and at its
    # end does their work itself, through the same Sender and Uploader.
    sweep = Sweep(workdir, LRS, "optimizer.steps=20000")
    try:
        wait_for(lambda: sweep.points(3), timeout=120)
        deadline = time.monotonic() + 120
        while "not restarted" not in sweep.err and time.monotonic() < deadline:
            for sender in sweep.senders():
                sender.kill()
            time.sleep(0.05)
        code = sweep.wait()
        err = sweep.err
    finally:
        sweep.none_left()
    assert code == 0, err
    assert err.count("started another") == 5 and "6 senders died" in err, err
    assert "unreachable" not in err
    children = check_store(sweep, "FINISHED")
    assert {run["status"] for _, run in children.values()} == {"FINISHED"}
    rows = read_summary(sweep.sweep_dir / "sweep_summary.csv")
    assert [(int(r["job"]), r["status"], r["run_id"]) for r in rows] == [
        (job, "FINISHED", children[job][0]) for job in range(4)
    ]
    sync_changes_nothing_but_completes(sweep, "FINISHED")


# ------------------------------------------------------------- the sweep killed


def _job_pids(sweep: Sweep) -> set[int]:
    return {p.pid for p in sweep.family() if "popen_loky" in " ".join(_cmdline(p))}


@pytest.mark.parametrize("when", ["jobs_starting", "children_sending", "a_worker_idle"])
def test_a_sigkilled_sweep_takes_its_workers_along_and_no_run_stays_running(workdir, when):
    # a_worker_idle: one job for two workers; the other never runs a job, so the kernel
    # was never asked to tell it: the sender does.
    lrs = "optimizer.lr=0.1" if when == "a_worker_idle" else LRS
    sweep = Sweep(workdir, lrs, "optimizer.steps=10000000")  # jobs that never end alone
    try:
        if when == "jobs_starting":  # a job's journal exists, maybe no point yet
            wait_for(lambda: _job_pids(sweep) and list(sweep.sweep_dir.glob(f"*/{JOURNAL_FILE}")),
                     timeout=120, every=0.05)  # fmt: skip
        else:
            wait_for(lambda: sweep.points(3), timeout=120)
        workers = _job_pids(sweep)
        sweep.proc.kill()
        sweep.wait()
        # The workers end their runs and exit, the sender sends them and exits: seconds.
        started = time.monotonic()
        sweep.none_left(timeout=30)
        took = time.monotonic() - started
        err = sweep.err
    finally:
        sweep.none_left()
    assert len(workers) == 2 and took < 20, (took, err)
    children = check_store(sweep, "KILLED")
    assert 1 <= len(children) <= 2, children  # only the jobs running when it died
    for _, run in children.values():
        assert run["status"] == "KILLED"
        assert run["tags"]["numgrad.stop_reason"] in ("terminated", "killed")
    for job_dir in sweep.sweep_dir.glob("[0-9]*"):  # a job whose run never started: no run
        # (its folder is removed, unless the worker died while Hydra was still making it)
        if not (job_dir / JOURNAL_FILE).exists():
            assert {p.name for p in job_dir.iterdir()} <= {".hydra", "numgrad.log"}
    sync_changes_nothing_but_completes(sweep, "KILLED")


def test_a_sweep_and_its_sender_killed_together_are_ended_by_the_next_start(workdir):
    # Nobody is left to tell the store: the workers end their journals KILLED and exit,
    # the next `numgrad` start ends the RUNNING runs KILLED, and numgrad-sync completes
    # them from their journals, in the same runs.
    sweep = Sweep(workdir, LRS, "optimizer.steps=10000000")
    try:
        wait_for(lambda: sweep.points(3), timeout=120)
        (sender,) = sweep.senders()
        sender.suspend()  # stopped first, so that the sweep cannot replace it before it dies
        sweep.proc.kill()
        sweep.wait()
        sender.kill()
        sweep.none_left(timeout=30)
    finally:
        sweep.none_left()
    journals = sorted(sweep.sweep_dir.glob(f"*/{JOURNAL_FILE}"))
    assert len(journals) == 2
    for journal in journals:  # ended by the worker itself as it died with the sweep
        assert read_journal(journal).end["status"] == "KILLED"
    running = [v for v in stored(workdir.store).values() if v["status"] == "RUNNING"]
    assert running  # nobody could end them
    start = workdir.run("optimizer.steps=0")  # same store, same experiment
    assert start.stderr.count("KILLED: it was RUNNING but its process") == len(running)
    assert "RUNNING" not in {v["status"] for v in stored(workdir.store).values()}
    children = sync_changes_nothing_but_completes(sweep, "KILLED", others=1)
    assert len(children) == 2
    assert {run["status"] for _, run in children.values()} == {"KILLED"}
