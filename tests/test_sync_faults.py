"""``numgrad-sync`` under faults: a run ending meanwhile, two syncs at once, an interrupted
upload, a full or read-only disk.

Whole-process tests (issue 18): ``numgrad`` and ``numgrad-sync`` run as a user would
start them, at several delays; the store is read back with ``MlflowClient`` and SQLite,
the journal from disk. Speed targets live in ``benchmarks/bench_sync.py``, not here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from numgrad.tracking.journal import JOURNAL_FILE, Journal, read_journal
from numgrad.tracking.records import MAX_METRICS_PER_BATCH
from numgrad.tracking.uploader import journal_lock
from tests.conftest import NUMGRAD, all_runs, history, numgrad_env, running, store_rows, wait_for
from tests.test_hostile_journals import copy_run, records
from tests.test_sync import SYNC, journaled_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three finished offline runs (three journals, three keys), made once and copied."""
    root = tmp_path_factory.mktemp("three")
    for seed in range(3):
        subprocess.run(
            [NUMGRAD, f"hydra.run.dir={root}/run-{seed}", "tracking.offline=true",
             "optimizer.steps=5", f"seed={seed}"],
            cwd=root, env=numgrad_env(), check=True, capture_output=True, timeout=240,
        )  # fmt: skip
    return [root / f"run-{seed}" for seed in range(3)]


def sync(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYNC, *args], cwd=cwd, env=numgrad_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def start_sync(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([SYNC, *args], cwd=cwd, env=numgrad_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def assert_complete(client, run, journal: Path) -> None:
    """The run holds every metric point of its journal, once, and the journal's status."""
    journaled = journaled_metrics(journal)
    assert {k: history(client, run.info.run_id, k) for k in journaled} == journaled
    assert run.info.status == read_journal(journal).end["status"]


def ends(journal: Path) -> list[str]:
    return [r["status"] for r in records(journal) if r["kind"] == "end"]


# ---------------------------------------------- 2. a run finishing during a sync


@pytest.mark.parametrize("delay", [0.0, 1.5, 3.0])
def test_a_run_finishing_during_a_sync_is_finished(workdir, store, delay):
    """Syncs back to back while a live offline run goes on, the first after ``delay``:
    each leaves it for later or uploads it finished, never ends it KILLED."""
    journal = workdir.path / "run" / JOURNAL_FILE
    outs = []
    with running(workdir.popen("tracking.offline=true", "optimizer.steps=60000",
                               "tracking.flush_seconds=0.2")) as proc:  # fmt: skip
        wait_for(journal.exists)
        time.sleep(delay)
        while proc.poll() is None:
            outs.append(sync(workdir.path, "--uri", store, str(journal.parent)))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert outs, "the run ended before the first sync: lengthen it"
    for out in outs:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "left for later" in out.stdout or "; FINISHED" in out.stdout, out.stdout
    after = sync(workdir.path, "--uri", store, str(journal.parent))
    assert after.returncode == 0, after.stderr
    client, (run,) = all_runs(store)  # exactly one run
    assert run.info.status == "FINISHED" and run.data.tags["numgrad.stop_reason"] == "steps"
    assert ends(journal) == ["FINISHED"]  # no "end KILLED" after it
    assert_complete(client, run, journal)


# ------------------------------------------------------- 3. two syncs at once


@pytest.mark.parametrize("how", ["same-order", "reverse-order", "three-syncs", "staggered"])
def test_concurrent_syncs_make_one_complete_run_per_journal(tmp_path, store, three_runs, how):
    runs = tmp_path / "runs"
    journals = [copy_run(run, runs / run.name) for run in three_runs]
    dirs = [str(j.parent) for j in journals]
    argvs = {
        "same-order": [[str(runs)], [str(runs)]],
        "reverse-order": [dirs, dirs[::-1]],
        "three-syncs": [[str(runs)], dirs[::-1], [dirs[1], dirs[0], dirs[2]]],
        "staggered": [[str(runs)], [str(runs)]],
    }[how]
    procs = []
    for argv in argvs:
        procs.append(start_sync(tmp_path, "--uri", store, *argv))
        if how == "staggered":
            time.sleep(2.0)  # the second starts while the first is uploading
    outs = []
    for proc in procs:
        with running(proc):
            out, err = proc.communicate(timeout=300)
            outs.append((proc.returncode, out, err))
    for code, out, err in outs:
        assert code == 0, out + err  # a journal another sync holds is a note, not a failure
        assert "its run is still going" not in out  # its run ended long ago: another sync has it
    uploaded = sum(int(out.splitlines()[-1].split(": ")[2].split()[0]) for _, out, _ in outs)
    assert uploaded == 3, outs  # each journal uploaded by exactly one of them
    client, stored = all_runs(store)
    assert len(stored) == 3
    by_id = {r.info.run_id: r for r in stored}
    for journal in journals:
        (run_id,) = [r["run_id"] for r in records(journal) if r["kind"] == "run"]  # once
        run = by_id.pop(run_id)
        assert run.data.tags["numgrad.stop_reason"] == "steps"
        assert_complete(client, run, journal)
    db = Path(store.removeprefix("sqlite:///"))
    counted = store_rows(db, "select run_uuid, count(*), count(distinct key||step) from metrics "
                         "group by run_uuid")  # fmt: skip
    assert len(counted) == 3 and all(n == distinct for _, n, distinct in counted)
    assert [sync(tmp_path, "--uri", store, str(runs)).stdout.splitlines()[-1]] == [
        "numgrad-sync: 3 journals: 0 uploaded, 3 already complete, 0 skipped"
    ]


def test_a_journal_another_sync_holds_is_left_for_later_and_said_so(tmp_path, store, three_runs):
    """Its run ended long ago: the holder is another uploader, not "its run"."""
    journal = copy_run(three_runs[0], tmp_path / "run")
    with journal_lock(journal):  # as another numgrad-sync holds it while uploading
        out = sync(tmp_path, "--uri", store, str(journal.parent))
    assert out.returncode == 0, out.stderr
    assert "left for later: another numgrad-sync is uploading it" in out.stdout, out.stdout
    assert all_runs(store)[1] == []
    assert "; FINISHED" in sync(tmp_path, "--uri", store, str(journal.parent)).stdout


# ------------------------------------------- 5. an interrupted sync resumes from its ack

VALUES = 100_000
KEYS = ("loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy")


def big_journal(run_dir: Path, values: int = VALUES, per_record: int = 1000) -> Path:
    """A finished journal of ``values`` metric points written with the Journal API."""
    run_dir.mkdir(parents=True)
    journal = Journal.create(run_dir / JOURNAL_FILE)
    t0 = 1_700_000_000_000
    journal.append("start", format=1, type="run", uri="sqlite:///nowhere.db",
                   experiment="numgrad", run_name="big", start_time=t0,
                   tags={"numgrad.kind": "run"})  # fmt: skip
    journal.append("params", params={"optimizer.steps": str(values // len(KEYS))})
    rows = [[k, 1.0 / (1 + step) + i, t0 + step, step]
            for step in range(values // len(KEYS)) for i, k in enumerate(KEYS)]  # fmt: skip
    for i in range(0, len(rows), per_record):
        journal.append("metrics", metrics=rows[i : i + per_record])
    journal.append("end", status="FINISHED", end_time=t0 + values)
    journal.close()
    return run_dir / JOURNAL_FILE


def stored_points(db: Path) -> tuple[int, int]:
    """(points, distinct (key, step) pairs) in the store's metrics table; (0, 0) before it."""
    sql = "select count(*), count(distinct key||'/'||step) from metrics"
    ((n, distinct),) = store_rows(db, sql) or [(0, 0)]
    return n, distinct


def reported_metric_values(out: str) -> int:
    """``N metric values`` from a sync's line for the journal."""
    (line,) = [line for line in out.splitlines() if "metric values)" in line]
    return int(line.split(" metric values)")[0].rsplit("(", 1)[1])


@pytest.mark.parametrize("stored_before", [0, 30_000, 70_000])
def test_an_interrupted_sync_resumes_from_its_acknowledgement(tmp_path, store, stored_before):
    """SIGINT once the store holds more than ``stored_before`` points, then sync again:
    the second sends only what the store lacks; every point is stored exactly once."""
    journal = big_journal(tmp_path / "big")
    db = Path(store.removeprefix("sqlite:///"))
    with running(start_sync(tmp_path, "--uri", store, str(journal.parent))) as proc:
        wait_for(lambda: stored_points(db)[0] > stored_before or proc.poll() is not None,
                 timeout=240, every=0.05)  # fmt: skip
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.splitlines()[-1] == "numgrad-sync: interrupted", err
    before, distinct = stored_points(db)
    assert before == distinct and before < VALUES
    again = sync(tmp_path, "--uri", store, str(journal.parent))
    assert again.returncode == 0, again.stderr
    assert reported_metric_values(again.stdout) == VALUES - before  # the rest, not all again
    assert stored_points(db) == (VALUES, VALUES)  # every point exactly once
    client, (run,) = all_runs(store)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == VALUES // len(KEYS)


def test_an_interrupted_sync_leaves_no_run_running(tmp_path, store):
    """Ctrl-C mid-upload: the half-uploaded run is marked (not left RUNNING), and the
    next sync completes that same run."""
    journal = big_journal(tmp_path / "big", values=20_000)
    db = Path(store.removeprefix("sqlite:///"))
    with running(start_sync(tmp_path, "--uri", store, str(journal.parent))) as proc:
        wait_for(lambda: stored_points(db)[0] > 0 or proc.poll() is not None, every=0.02)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    _, (run,) = all_runs(store)
    assert run.info.status != "RUNNING"
    assert sync(tmp_path, "--uri", store, str(journal.parent)).returncode == 0
    _, (same,) = all_runs(store)
    assert same.info.run_id == run.info.run_id and same.info.status == "FINISHED"
    assert "numgrad.upload_error" not in same.data.tags


def test_a_store_lost_mid_upload_is_one_line_and_a_later_sync_completes_the_same_run(
    tmp_path, mlflow_server
):
    """The server dies (SIGKILL) part-way through a sync: one line saying so, exit 1; the
    run cannot be told, but the journal holds how far it got, and the next sync sends
    only the rest into the same run."""
    journal = big_journal(tmp_path / "big", values=30_000)
    db = mlflow_server.root / "server.db"
    with running(start_sync(tmp_path, "--uri", mlflow_server.uri, str(journal.parent))) as proc:
        wait_for(lambda: stored_points(db)[0] > 3_000 or proc.poll() is not None,
                 timeout=240, every=0.05)  # fmt: skip
        mlflow_server.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    (line,) = err.splitlines()
    assert line.startswith("numgrad-sync: big: stopped part-way: ") and line.endswith(
        "the journal records how far it got: sync it again to go on"
    ), line
    before, distinct = stored_points(db)
    assert before == distinct and 3_000 < before < 30_000
    (run_id,) = {r["run_id"] for r in records(journal) if r["kind"] == "run"}
    mlflow_server.start()
    again = sync(tmp_path, "--uri", mlflow_server.uri, str(journal.parent))
    assert again.returncode == 0, again.stderr
    assert f"to run {run_id} (big)" in again.stdout
    rest = 30_000 - before  # at most one batch in flight was stored but not acknowledged
    assert rest <= reported_metric_values(again.stdout) <= rest + MAX_METRICS_PER_BATCH
    assert stored_points(db) == (30_000, 30_000)  # every point exactly once
    _, (run,) = all_runs(mlflow_server.uri)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"


# ------------------------------------------------------ 6. disk full, read-only dirs


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (root only); unmounted afterwards."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def fill(disk: Path) -> None:
    """Fill a file system to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


def one_line(proc: subprocess.CompletedProcess[str], path: Path, code: int, err: int) -> str:
    """One line naming ``path`` and the meaning of ``err``, exit ``code``, no traceback."""
    why = os.strerror(err)
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in lines[0] and why in lines[0], lines[0]
    return lines[0]


def no_run_running(uri: str) -> list:
    _, runs = all_runs(uri)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    return runs


TRACKING = {"online": (), "offline": ("tracking.offline=true",),
            "untracked": ("tracking.enabled=false",)}  # fmt: skip


@pytest.mark.parametrize("tracking", TRACKING)
def test_a_full_disk_at_start_is_one_line_and_no_run(workdir, store, tracking):
    with tmpfs(workdir.path / "disk", "256k") as disk:
        fill(disk)
        argv = workdir.argv(f"hydra.run.dir={disk}/run", f"tracking.uri={store}",
                            *TRACKING[tracking])  # fmt: skip
        proc = subprocess.run(argv, cwd=workdir.path, env=numgrad_env(), capture_output=True,
                              text=True, timeout=240)  # fmt: skip
        one_line(proc, disk, 2, errno.ENOSPC)
    assert no_run_running(store) == []


@pytest.mark.parametrize("tracking", ["online", "offline"])
def test_a_disk_filling_up_mid_run_is_one_line_and_a_later_sync_makes_one_run(
    workdir, store, tracking
):
    with tmpfs(workdir.path / "disk", "600k") as disk:
        run_dir = disk / "run"
        argv = workdir.argv(f"hydra.run.dir={run_dir}", f"tracking.uri={store}",
                            "optimizer.steps=20000", "tracking.max_points=100000",
                            "tracking.flush_seconds=0.2", *TRACKING[tracking])  # fmt: skip
        proc = subprocess.run(argv, cwd=workdir.path, env=numgrad_env(), capture_output=True,
                              text=True, timeout=240)  # fmt: skip
        one_line(proc, disk, 1, errno.ENOSPC)
        before = no_run_running(store)
        assert len(before) == (1 if tracking == "online" else 0)
        remount(disk, "size=64m")  # space freed
        out = sync(workdir.path, "--uri", store, str(run_dir))
        assert out.returncode == 0, out.stdout + out.stderr
        client, (run,) = all_runs(store)  # exactly one run, the live run's if it had one
        assert [r.info.run_id for r in before] in ([], [run.info.run_id])
        assert run.info.status in ("FAILED", "KILLED")
        journal = run_dir / JOURNAL_FILE
        journaled = journaled_metrics(journal)
        assert {k: history(client, run.info.run_id, k) for k in journaled} == journaled
        assert sync(workdir.path, "--uri", store, str(run_dir)).returncode == 0
        assert len(all_runs(store)[1]) == 1


@pytest.mark.parametrize("tracking", TRACKING)
@pytest.mark.parametrize("where", ["run-dir", "working-dir"])
def test_a_read_only_dir_is_one_line_and_no_run(workdir, store, tracking, where):
    # chmod 0o555 means nothing to root: a read-only mount is read-only for everyone.
    with tmpfs(workdir.path / "ro", "1m") as ro:
        (ro / "sub").mkdir()
        remount(ro, "ro")
        if where == "run-dir":
            cwd, dirs = workdir.path, [f"hydra.run.dir={ro}/sub/run"]
        else:  # Hydra's default run dir, outputs/<date>/<time>, under a read-only cwd
            cwd, dirs = ro / "sub", []
        argv = [workdir.argv()[0], *dirs, f"tracking.uri={store}", *TRACKING[tracking]]
        proc = subprocess.run(argv, cwd=cwd, env=numgrad_env(), capture_output=True, text=True,
                              timeout=240)  # fmt: skip
        one_line(proc, ro, 2, errno.EROFS)
    assert no_run_running(store) == []
