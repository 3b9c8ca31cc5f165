"""A sweep's sender: journals followed as they grow, sent once, the dead ended KILLED.

In-process through :class:`numgrad.tracking.sender.Sender`, and as the process a
sweep starts (its stdin/stdout protocol); everything read back with ``MlflowClient``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from numgrad.tracking.journal import JOURNAL_FILE, Journal, JournalReader, read_journal
from numgrad.tracking.provenance import base_tags
from numgrad.tracking.recorder import Recorder
from numgrad.tracking.sender import Sender
from tests.conftest import all_runs, dead_pid, history


def journal_run(directory: Path, uri: str, name: str, *, steps: int = 3, end: bool = True,
                handed_over: bool = True, kind: str = "run", tags=None) -> Recorder:  # fmt: skip
    """What a sweep's job (or its parent) leaves: a handed-over journal, no store touched."""
    directory.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(directory, uri=uri, experiment="numgrad", run_name=name,
                        offline=not handed_over, handed_over=handed_over)  # fmt: skip
    recorder.start(kind=kind, tags={**base_tags(), **(tags or {})}, params={"optimizer.lr": "0.1"})
    recorder.record("metrics", metrics=[["loss", 1.0 / (s + 1), 1_700_000_000_000 + s, s]
                                        for s in range(steps)])  # fmt: skip
    recorder.journal.sync()
    if end:
        recorder.finish("FINISHED")
    else:
        recorder.journal.close()  # a writer gone (or, for a parent, not done yet)
    return recorder


def test_a_line_is_read_once_it_is_whole(tmp_path):
    path = tmp_path / JOURNAL_FILE
    start = b'{"seq":1,"kind":"start","uri":"sqlite:///m.db","experiment":"e","run_name":"r","start_time":1}'
    path.write_bytes(start + b'\n{"seq":2,"kind":"metr')
    followed = JournalReader(path)
    followed.read_new()
    assert [e["seq"] for e in followed.entries] == [1]
    with open(path, "ab") as f:
        f.write(b'ics","metrics":[]}\n{"seq":3,"kind":"end","status":"FINISHED"}\n')
    followed.read_new()
    assert [e["kind"] for e in followed.entries] == ["start", "metrics", "end"]
    assert followed.end["status"] == "FINISHED"


def test_children_go_under_their_parent_once(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep lr=0.1,0.2", kind="sweep", end=False)
    for n in (0, 1):
        journal_run(sweep / str(n), store, f"lr={n}", steps=4)
    sender = Sender(sweep, store)
    assert sender.send_all() and sender.busy  # it sent: the next pass comes at once
    assert sender.send_all() and not sender.busy  # nothing new: it waits to read again
    client, runs = all_runs(store)
    (parent,) = [r for r in runs if r.info.run_name.startswith("sweep")]
    children = [r for r in runs if r is not parent]
    assert sorted(c.info.run_name for c in children) == ["lr=0", "lr=1"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert [s for s, _ in history(client, child.info.run_id, "loss")] == [0, 1, 2, 3]
    state = sender.state()
    assert all(s["synced"] for s in state["children"].values())
    # Each finished journal now says where it went: numgrad-sync finds it complete.
    assert read_journal(sweep / "0" / JOURNAL_FILE).synced(store)
    assert parent.info.status == "RUNNING"  # its journal has no end yet


def test_a_job_that_died_without_an_end_is_killed_and_a_foreign_journal_left_alone(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    journal_run(sweep / "0", store, "dead", end=False, tags={"numgrad.pid": str(dead_pid())})
    journal_run(sweep / "1", store, "on ray", handed_over=False)  # sends itself
    sender = Sender(sweep, store)
    sender.end_the_dead()
    assert sender.send_all()
    _, runs = all_runs(store)
    assert sorted(r.info.run_name for r in runs) == ["dead", "sweep"]
    (dead,) = [r for r in runs if r.info.run_name == "dead"]
    assert dead.info.status == "KILLED" and dead.data.tags["numgrad.stop_reason"] == "killed"
    assert list(sender.state()["children"]) == [str(sweep / "0" / JOURNAL_FILE)]


def test_a_store_that_does_not_answer_is_retried_later(tmp_path):
    sweep = tmp_path / "multirun"
    uri = "http://127.0.0.1:9"  # nothing listens there
    journal_run(sweep, uri, "sweep", kind="sweep")
    sender = Sender(sweep, uri)
    assert not sender.send_all()
    assert not sender.send_all() and not sender.busy  # not yet due: no second attempt
    assert sender.error is None and sender.state()["parent"]["synced"] is False


def test_the_process_answers_drain_and_finish(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    journal_run(sweep / "0", store, "lr=0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep), store, "--grace", "5"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    said = json.loads(proc.stdout.readline())
    assert said["event"] == "parent"
    proc.stdin.write("drain\n")
    proc.stdin.flush()
    state = json.loads(proc.stdout.readline())
    assert state["event"] == "state" and state["parent"]["run_id"] == said["run_id"]
    (child,) = state["children"].values()
    assert child["status"] == "FINISHED" and child["synced"] and child["run_name"] == "lr=0"
    # The sweep ends its parent's journal, then asks the sender to finish.
    journal, _ = Journal.reopen(sweep / JOURNAL_FILE)
    journal.append("end", status="FINISHED", end_time=1_700_000_000_999)
    journal.close()
    out, _ = proc.communicate("finish\n", timeout=60)
    final = json.loads(out.splitlines()[-1])
    assert proc.returncode == 0 and final["parent"]["synced"]
    assert MlflowClient(store).get_run(said["run_id"]).info.status == "FINISHED"


def test_a_sweep_killed_outright_has_its_parent_ended_killed(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    journal_run(sweep / "0", store, "lr=0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep), store,
         "--grace", "5", "--parent-pid", str(dead_pid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = proc.communicate(timeout=60)  # its sweep is gone: it sends all and exits
    final = json.loads(out.splitlines()[-1])
    assert proc.returncode == 0 and final["parent"]["synced"]
    parent = MlflowClient(store).get_run(final["parent"]["run_id"])
    assert parent.info.status == "KILLED" and parent.data.tags["numgrad.stop_reason"] == "killed"
    assert read_journal(sweep / JOURNAL_FILE).synced(store)


def test_a_journal_the_store_holds_part_of_says_which_run_when_the_sender_gives_up(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    sender = Sender(sweep, store)
    assert sender.send_all()  # the parent's run exists; then the store stops answering
    journal, _ = Journal.reopen(sweep / JOURNAL_FILE)
    journal.append("end", status="FINISHED", end_time=1_700_000_000_999)
    journal.close()
    sender.parent.reader.read_new()  # its end is read but never sent
    sender.give_up()
    view = read_journal(sweep / JOURNAL_FILE)
    # numgrad-sync goes on in this run instead of making a second one, from where it stopped.
    assert view.runs == {store: sender.parent.run_id} and not view.synced(store)
    assert view.acked[store] == sender.parent.uploader.acked < sender.parent.reader.end["seq"]


def test_a_sender_started_again_goes_on_in_the_runs_the_first_one_made(tmp_path, store):
    sweep = tmp_path / "multirun"
    journal_run(sweep, store, "sweep", kind="sweep", end=False)
    journal_run(sweep / "0", store, "lr=0", steps=2, end=False)  # its job still writes
    first = Sender(sweep, store)
    assert first.send_all() and first.parent.uploader.made_here
    for t in [first.parent, *first.children.values()]:
        t.lock.release()  # the first sender is gone before the journals ended
    journal, _ = Journal.reopen(sweep / "0" / JOURNAL_FILE)
    journal.append("metrics", metrics=[["loss", 1 / 3, 1_700_000_000_002, 2]])
    journal.append("end", status="FINISHED", end_time=1_700_000_000_999)
    journal.close()
    second = Sender(sweep, store)
    assert second.send_all() and not second.parent.uploader.made_here
    client, runs = all_runs(store)
    assert len(runs) == 2  # its own runs found by their journals' keys, none made twice
    (child,) = [r for r in runs if r.info.run_name == "lr=0"]
    assert child.info.run_id == first.children[sweep / "0" / JOURNAL_FILE].run_id
    assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] in {
        r.info.run_id for r in runs if r.info.run_name == "sweep"
    }
    assert [s for s, _ in history(client, child.info.run_id, "loss")] == [0, 1, 2]
