"""The local run journal on disk (numgrad.tracking.journal)."""

from __future__ import annotations

import json

import pytest

from numgrad.tracking.journal import JOURNAL_FILE, Journal, JournalError, read_journal

URI = "sqlite:////tmp/store/mlflow.db"


def write(path, *entries):
    journal = Journal.create(path)
    for kind, fields in entries:
        journal.append(kind, **fields)
    journal.close()


START = ("start", {"uri": URI, "experiment": "numgrad", "run_name": "r", "start_time": 1})


def test_records_pending_until_acknowledged(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write(
        path, START,
        ("metrics", {"metrics": [["loss", 0.5, 1, 0]]}),
        ("run", {"uri": URI, "run_id": "abc"}),
        ("ack", {"uri": URI, "seq_acked": 2}),
        ("metrics", {"metrics": [["loss", 0.25, 2, 1]]}),
    )  # fmt: skip
    view = read_journal(path)
    assert [e["kind"] for e in view.entries] == ["start", "metrics", "metrics"]
    assert view.runs == {URI: "abc"} and view.acked == {URI: 2} and view.last_seq == 5
    assert [e["seq"] for e in view.pending(URI)] == [5]
    assert [e["seq"] for e in view.pending("http://elsewhere:5000")] == [1, 2, 5]
    assert not view.synced(URI) and view.end is None


def test_synced_needs_the_run_every_record_and_the_end(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write(
        path, START, ("end", {"status": "FINISHED", "end_time": 3}),
        ("run", {"uri": URI, "run_id": "abc"}), ("ack", {"uri": URI, "seq_acked": 2}),
    )  # fmt: skip
    view = read_journal(path)
    assert view.synced(URI) and view.end["status"] == "FINISHED"


def test_each_line_is_one_json_record_with_seq_and_kind(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write(path, START, ("params", {"params": {"optimizer.lr": "0.1"}}))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert json.loads(lines[1]) == {"seq": 2, "kind": "params", "params": {"optimizer.lr": "0.1"}}


def test_nan_never_reaches_the_journal(tmp_path):
    journal = Journal.create(tmp_path / JOURNAL_FILE)
    with pytest.raises(ValueError):
        journal.append("metrics", metrics=[["loss", float("nan"), 1, 0]])
    journal.close()


def test_a_torn_last_line_is_skipped_and_cut_off_on_reopen(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write(path, START, ("metrics", {"metrics": [["loss", 0.5, 1, 0]]}))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"seq":3,"kind":"metr')  # power cut mid-write
    view = read_journal(path)
    assert [e["seq"] for e in view.entries] == [1, 2]
    assert view.torn == "line 3 (21 bytes, cut short)"
    journal, torn = Journal.reopen(path)
    assert torn == view.torn and path.read_bytes() == whole
    journal.append("ack", uri=URI, seq_acked=2)  # numbering goes on after the last good line
    journal.close()
    assert read_journal(path).acked == {URI: 2} and read_journal(path).torn is None


def test_a_corrupt_line_in_the_middle_makes_the_journal_unreadable(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write(path, START, ("metrics", {"metrics": [["loss", 0.5, 1, 0]]}))
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(lines[0] + b"\nnot json\n" + lines[1] + b"\n")
    with pytest.raises(JournalError, match="line 2 is not a journal record"):
        read_journal(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "does not begin with the run's start record"),
        (b'{"seq":1,"kind":"metrics","metrics":[]}\n', "does not begin with the run's start"),
        (b'{"seq":1,"kind":"start","format":99}\n', "written by a newer numgrad"),
        (
            b'{"seq":1,"kind":"start","uri":"u","experiment":"e","run_name":"r","start_time":1}\n'
            b'{"seq":2,"kind":"mystery"}\n',
            "unknown kind 'mystery'",
        ),
    ],
)
def test_unreadable_journals_say_why(tmp_path, content, words):
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(content)
    with pytest.raises(JournalError, match=words):
        read_journal(path)


def test_a_journal_is_never_shared(tmp_path):
    write(tmp_path / JOURNAL_FILE, START)
    with pytest.raises(JournalError, match="cannot create the run journal"):
        Journal.create(tmp_path / JOURNAL_FILE)


@pytest.mark.parametrize(
    "path", [None, "", "figures", "a/b", "x..y", "../x", "/etc", "a/../b", "./a", ".", "..x", "a/"]
)
def test_an_artifact_destination_is_read_as_mlflow_would_take_it(tmp_path, path):
    """A destination MLflow refuses makes the journal unreadable on reading, before its
    run exists: refused only by MLflow, it stopped the upload part-way, the run RUNNING."""
    from mlflow.utils.validation import path_not_unique  # MLflow's own rule: the reference

    journal = tmp_path / JOURNAL_FILE
    write(journal, START, ("artifact", {"local": "artifacts", "path": path}))
    if path and path_not_unique(path):
        with pytest.raises(JournalError, match=r"line 2: path=.* is not a relative artifact path"):
            read_journal(journal)
    else:
        assert read_journal(journal).entries[-1]["path"] == path
