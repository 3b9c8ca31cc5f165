"""Tracking URIs checked before any run exists (numgrad.tracking.uri)."""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from numgrad.tracking.uri import TrackingError, check_uri, resolve_uri, sqlite_path


def test_resolve_uri_precedence():
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    assert resolve_uri(None, {}) == "sqlite:///outputs/mlflow.db"
    assert resolve_uri(None, env) == "http://127.0.0.1:9"
    assert resolve_uri("sqlite:///x.db", env) == "sqlite:///x.db"


def test_sqlite_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_uri("sqlite:///outputs/mlflow.db") == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert sqlite_path(check_uri("sqlite:///a b.db")) == tmp_path / "a b.db"


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("ftp://example.org/store", "unsupported tracking URI scheme 'ftp'"),
        ("sqlite:///:memory:", "unsupported SQLite tracking URI"),
        ("sqlite://", "unsupported SQLite tracking URI"),
        ("sqlite:///{file}/sub/mlflow.db", "cannot write the MLflow store"),  # under a file
        ("sqlite:////proc/numgrad/mlflow.db", "cannot write the MLflow store"),
        ("file:///{file}/mlruns", "is a file store"),
        ("./mlruns", "is a file store"),
    ],
)
def test_bad_settings_fail_before_any_run(tmp_path, uri, words):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(TrackingError, match=words) as info:
        check_uri(uri.format(file=tmp_path / "file"))
    assert "\n" not in str(info.value)


def test_dead_server_fails_within_15_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"tracking server .* is not reachable") as info:
        check_uri(f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < 15
    assert "tracking.offline=true" in str(info.value)  # the way to run anyway
    assert check_uri(f"http://127.0.0.1:{port}", probe=False)  # offline: not contacted


def test_another_applications_database_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as con:
        con.execute("create table customers(id int)")
        con.execute("insert into customers values (1)")
    con.close()
    before = db.read_bytes()
    with pytest.raises(TrackingError) as info:
        check_uri(f"sqlite:///{db}")
    assert str(info.value) == (
        f"{db} is a database of another application (tables: customers), not an MLflow "
        "store: numgrad will not add MLflow's tables to it; choose another tracking.uri"
    )
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no journal, no -wal


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    (tmp_path / "notes.db").write_text("these are my notes, not a database\n" * 10)
    with pytest.raises(TrackingError, match=r"is not an MLflow store .*not a database"):
        check_uri(f"sqlite:///{tmp_path / 'notes.db'}")


def test_an_empty_file_and_a_real_store_are_accepted(tmp_path, empty_store):
    (tmp_path / "empty.db").touch()
    assert check_uri(f"sqlite:///{tmp_path / 'empty.db'}")
    assert check_uri(f"sqlite:///{empty_store}")


def test_a_store_being_made_is_checked_once_its_tables_are_whole(tmp_path, empty_store):
    # Another numgrad process holds the store's lock while MLflow makes its tables: a
    # look in the middle would see "experiments" alone and call it a foreign database.
    import shutil
    import threading

    from numgrad.tracking.uri import store_lock

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    outcome: list[object] = []
    with store_lock(db):
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY)")
        con.close()
        looking = threading.Thread(target=lambda: outcome.append(_check(uri)))
        looking.start()
        looking.join(timeout=1.0)
        assert looking.is_alive() and not outcome  # it waits for the maker
        shutil.copyfile(empty_store, db)  # the maker is done: every table is there
    looking.join(timeout=30)
    assert outcome == [None]


def _check(uri: str) -> str | None:
    try:
        check_uri(uri, probe=True)
    except TrackingError as exc:
        return str(exc)
    return None
