"""A sweep's sender with upload processes: every child once under its parent, and none
of them outliving the sender, nor a journal lost with one that dies.

In-process through :class:`numgrad.tracking.sender.Sender` with ``uploaders=2``, and as
the sender process a sweep starts; everything read back with ``MlflowClient`` or psutil.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from numgrad.tracking.journal import JOURNAL_FILE, Journal, read_journal
from numgrad.tracking.sender import Sender
from numgrad.tracking.upload_pool import UploadPool
from numgrad.tracking.uri import sqlite_path
from tests.conftest import all_runs, history, wait_for
from tests.test_sender import journal_run
from tests.test_sweeps import sweep_runs

WORKER = "numgrad.tracking.upload_worker"


def workers_of(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if WORKER in " ".join(p.cmdline())]


def until_closed(sender: Sender, jobs: int, timeout: float = 120) -> None:
    """Send until every child journal is closed (the parent's goes on: no end yet)."""
    deadline = time.monotonic() + timeout
    while not (len(sender.children) == jobs and all(t.closed for t in sender.children.values())):
        assert sender.send_all() and sender.error is None, sender.error
        assert time.monotonic() < deadline, [t.state() for t in sender.children.values()]
        time.sleep(0.02)


def test_with_two_uploaders_every_child_lands_once_under_its_parent(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    for n in range(8):
        journal_run(sweep / str(n), store, f"lr={n}", steps=5)
    sender = Sender(sweep, store, uploaders=2)
    try:
        until_closed(sender, 8)
        state = sender.state()
        worker = psutil.Process(sender.pool.slots[0].proc.pid)
    finally:
        sender.close()
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    # Both did their part: some journals were sent here, the others by the upload process.
    assert {t.slot for t in sender.children.values()} == {0, 1}
    client, runs = all_runs(store)
    (parent,) = [r for r in runs if r.info.run_name == "sweep"]
    children = [r for r in runs if r is not parent]
    assert sorted(c.info.run_name for c in children) == [f"lr={n}" for n in range(8)]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert [s for s, _ in history(client, child.info.run_id, "loss")] == [0, 1, 2, 3, 4]
    for n in range(8):  # each journal says where it went, and the sender's state agrees
        path = sweep / str(n) / JOURNAL_FILE
        assert read_journal(path).synced(store)
        assert state["children"][str(path)]["synced"]
        assert state["children"][str(path)]["run_id"] == read_journal(path).runs[store]
    # Two processes write the store side by side: SQLite's WAL mode (bench_sender.py).
    with sqlite3.connect(sqlite_path(store)) as con:
        assert con.execute("pragma journal_mode").fetchone() == ("wal",)


def test_a_sender_that_keeps_up_starts_no_upload_process(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    for n in range(3):  # no backlog beyond what the sender sends itself
        journal_run(sweep / str(n), store, f"lr={n}")
    sender = Sender(sweep, store, uploaders=4)
    until_closed(sender, 3)
    assert {t.slot for t in sender.children.values()} == {0}
    assert all(slot.proc is None and not slot.starts for slot in sender.pool.slots)
    with sqlite3.connect(sqlite_path(store)) as con:  # the store's mode as it was
        assert con.execute("pragma journal_mode").fetchone() == ("delete",)


def test_waiting_for_upload_processes_gives_up_on_one_that_died_at_start(
    tmp_path, store, monkeypatch
):
    pool = UploadPool(tmp_path, store, 1)
    monkeypatch.setattr(sys, "executable", shutil.which("false"))  # exits 1 at once
    started = time.monotonic()
    pool.started(timeout=60)
    assert time.monotonic() - started < 10
    assert pool.slots[0].proc.returncode == 1
    pool.close()


def test_a_journal_whose_upload_process_died_is_sent_by_its_replacement(tmp_path, store, capfd):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    for n in (0, 1):  # still being written (by this process): one to each uploader
        journal_run(sweep / str(n), store, f"lr={n}", steps=2, end=False)
    sender = Sender(sweep, store, uploaders=2)
    sender.pool.started()  # (else one starts only for a backlog of ended journals)
    try:
        path = sweep / "1" / JOURNAL_FILE
        wait_for(lambda: sender.send_all() and sender.children.get(path)
                 and sender.children[path].run_id, timeout=60)  # fmt: skip
        assert sender.children[path].slot == 1  # the upload process sends it
        first = sender.children[path].run_id
        dead = sender.pool.slots[0].proc.pid
        psutil.Process(dead).send_signal(signal.SIGKILL)  # holding its journal's lock
        for n in (0, 1):  # the writer goes on, then ends
            journal, _ = Journal.reopen(sweep / str(n) / JOURNAL_FILE)
            journal.append("metrics", metrics=[["loss", 1 / 3, 1_700_000_000_002, 2]])
            journal.append("end", status="FINISHED", end_time=1_700_000_000_999)
            journal.close()
        until_closed(sender, 2)
        assert sender.pool.slots[0].proc.pid != dead and sender.pool.slots[0].starts == 2
    finally:
        sender.close()
    assert "upload process 1 (pid" in capfd.readouterr().err
    client, runs = all_runs(store)
    assert len(runs) == 3  # its run found again by the journal's key, not made twice
    (child,) = [r for r in runs if r.info.run_name == "lr=1"]
    assert child.info.run_id == first == read_journal(path).runs[store]
    assert child.info.status == "FINISHED"
    assert [s for s, _ in history(client, first, "loss")] == [0, 1, 2]


@pytest.mark.slow
def test_a_sender_killed_outright_takes_its_upload_processes_along(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    for n in range(12):  # a backlog: both upload processes start for it
        journal_run(sweep / str(n), store, f"lr={n}", steps=200)
    proc = subprocess.Popen(
        [sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep), store,
         "--grace", "5", "--uploaders", "3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert json.loads(proc.stdout.readline())["event"] == "parent"
        workers = wait_for(lambda: len(workers_of(proc.pid)) == 2 and workers_of(proc.pid))
        proc.kill()  # while they upload
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == [], [p.pid for p in alive]
    finally:
        proc.kill()
        proc.communicate()
    # Their journals' locks went with them: a successor sends every journal, each once.
    successor = Sender(sweep, store)
    until_closed(successor, 12)
    client, runs = all_runs(store)
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["sweep", *(f"lr={n}" for n in range(12))]
    )
    for run in runs:
        if run.info.run_name != "sweep":
            assert run.info.status == "FINISHED"
            assert len(history(client, run.info.run_id, "loss")) == 200


def test_a_sender_process_refuses_fewer_than_one_uploader(tmp_path, store):
    sweep = tmp_path / "multirun"
    proc = subprocess.run(
        [sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep), store,
         "--uploaders", "0"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "numgrad: --uploaders must be at least 1, not 0\n"
    assert not sweep.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def journal_mode(db) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA journal_mode").fetchone()[0]


def ended_journals(folder) -> int:
    ended = 0
    for path in folder.glob(f"*/{JOURNAL_FILE}"):
        with contextlib.suppress(Exception):  # one being written
            ended += read_journal(path).end is not None
    return ended


@pytest.mark.slow
@pytest.mark.parametrize("uploaders", [1, 2])
def test_a_sweep_with_tracking_uploaders_sends_every_child_once(workdir, uploaders):
    """The setting reaches the sweep's sender. The store is held busy by another writer
    until every job has ended, so the ended journals pile up: with 2 an upload process
    starts (the store turns WAL), with 1 the sender sends them all itself and leaves the
    store's journal mode alone."""
    workdir.run("optimizer.steps=0")  # an existing store: the jobs do not wait for it
    lrs = ",".join(str(0.05 * (n + 1)) for n in range(12))
    held = sqlite3.connect(workdir.store, isolation_level=None)
    held.execute("BEGIN IMMEDIATE")  # readers go on, writers wait
    try:
        proc = workdir.popen(f"optimizer.lr={lrs}", "optimizer.steps=3",
                             f"tracking.uploaders={uploaders}", "tracking.experiment=sweep",
                             multirun=True)  # fmt: skip
        wait_for(lambda: ended_journals(workdir.path / "multirun") == 12, timeout=120)
    finally:
        held.execute("ROLLBACK")
        held.close()
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    client, parent, children = sweep_runs(workdir.uri, "sweep")
    assert parent.info.status == "FINISHED" and len(children) == 12
    assert len({c.data.tags["numgrad.journal_key"] for c in children}) == 12
    for child in children:
        assert child.info.status == "FINISHED"
        assert [s for s, _ in history(client, child.info.run_id, "loss")] == [0, 1, 2, 3]
    assert journal_mode(workdir.store) == ("wal" if uploaders > 1 else "delete")


@pytest.mark.slow
def test_a_sweep_refuses_tracking_uploaders_out_of_range_before_anything_runs(workdir):
    proc = workdir.run("optimizer.lr=0.1,0.2", "tracking.uploaders=0", multirun=True,
                       check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "numgrad: error: invalid tracking.uploaders=0: must be from 1 to 16, "
        "or null (one per 4 cores)\n"
    )
    assert not workdir.store.exists()
