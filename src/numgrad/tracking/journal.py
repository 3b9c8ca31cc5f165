"""The local run journal: every record of a tracked run, on disk before MLflow sees it.

One JSON object per line, appended to ``tracking_journal.jsonl`` in the run's Hydra
dir, each with a sequence number ``seq`` and a ``kind``:

- the run's records, in the order they were made: ``start`` (identity: store URI,
  experiment, run name, start time, tags, parent), ``params``, ``tags``, ``metrics``
  (``[key, value, timestamp_ms, step]`` rows), ``artifact`` (a file or folder,
  relative to the journal's dir), ``end`` (final status and end time);
- bookkeeping about a store: ``run`` (the run id a store gave it) and ``ack`` (every
  record up to ``seq`` is in that store).

The run's process writes it and flushes it to disk (``fsync``) at every metric flush,
so a SIGKILL or a power cut loses at most the last interval; ``numgrad-sync`` reads it
and uploads what no store has acknowledged. A torn last line (a write cut short) is
skipped and reported; any other unreadable line makes the whole journal unreadable.
Every reader (the live run's uploader, a sweep's sender, ``numgrad-sync``, a sweep's
liveness check) reads it through :class:`JournalReader`, as a whole or as it grows.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     journal = Journal.create(Path(d) / JOURNAL_FILE)
...     _ = journal.append("start", uri="sqlite:///m.db", experiment="numgrad",
...                        run_name="default", start_time=1700000000000)
...     _ = journal.append("metrics", metrics=[["loss", 0.5, 1700000000000, 0]])
...     journal.close()
...     view = read_journal(Path(d) / JOURNAL_FILE)
...     [e["kind"] for e in view.pending("sqlite:///m.db")], view.synced("sqlite:///m.db")
(['start', 'metrics'], False)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from numgrad import signals
from numgrad.command import FAILED
from numgrad.tracking.entries import (
    DATA_KINDS,
    FORMAT,
    MAX_LINE_BYTES,
    check_entry,
    check_start,
)

JOURNAL_FILE = "tracking_journal.jsonl"


class JournalError(Exception):
    """A journal that cannot be read (or a run's file written); the message names the file."""

    exit_status = FAILED

    @classmethod
    def writing(cls, exc: BaseException, what: str | None = None) -> JournalError:
        """A failed write (disk full, read-only) in one line: the path and the reason."""
        if isinstance(exc, cls):
            return exc
        what = what or getattr(exc, "filename", None) or "a run file"
        return cls(f"cannot write {what}: {getattr(exc, 'strerror', None) or exc}")


class Journal:
    """Appends lines to one journal file; create it with :meth:`create` or :meth:`reopen`."""

    def __init__(self, path: Path, handle: Any, last_seq: int) -> None:
        self.path, self._file, self.seq = path, handle, last_seq

    @classmethod
    def create(cls, path: Path) -> Journal:
        """A new, empty journal (an existing file is an error: journals are never shared)."""
        try:
            handle = open(path, "x", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot create the run journal {path}: {exc}") from None
        return cls(path, handle, 0)

    @classmethod
    def reopen(cls, path: Path) -> tuple[Journal, str | None]:
        """Open an existing journal for appending; a torn last line is cut off first.

        Returns the journal and a description of what was cut (None if nothing).
        """
        view = read_journal(path)
        if view.torn_at is not None:
            with open(path, "r+b") as f:
                f.truncate(view.torn_at)
        try:
            handle = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot write the run journal {path}: {exc.strerror}") from None
        return cls(path, handle, view.last_seq), view.torn

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one line (buffered) and return it as a dict; signals wait for the write."""
        self.seq += 1
        entry = {"seq": self.seq, "kind": kind, **fields}
        line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
        with self._writing():  # a line is written whole or not at all
            self._file.write(line)
        return entry

    def end_killed(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """End the journal of a process that died without a status: KILLED, at its last record.

        ``entries`` are the journal's records so far, its start first.
        """
        stamps = [m[2] for e in entries if e["kind"] == "metrics" for m in e["metrics"]]
        last = max(stamps, default=entries[0]["start_time"])
        return [
            self.append("tags", tags={"numgrad.stop_reason": "killed"}),
            self.append("end", status="KILLED", end_time=last),
        ]

    def flush(self) -> None:
        """Hand what was appended to the OS: readers see it, a crash of this process keeps it."""
        with self._writing():
            self._file.flush()

    def sync(self) -> None:
        """Flush to the disk itself (fsync): what was appended survives a power cut."""
        with self._writing():
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            self.sync()
        finally:
            with contextlib.suppress(OSError):  # the error is the one sync() raised
                self._file.close()

    def close_quietly(self) -> None:
        """Close after a failure: what could not be written is lost, and no error is added."""
        with contextlib.suppress(JournalError, OSError):
            self.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Signals wait for the write; a failed write (disk full, read-only) is one line."""
        try:
            with signals.held():
                yield
        except OSError as exc:
            raise JournalError.writing(exc, f"the run journal {self.path}") from None


class JournalReader:
    """A journal read back, as a whole or as it grows: the run's records, and what each
    store has of them. The one reader: every journal is read through it.

    :meth:`read_new` reads the complete lines written since the last call; each is
    checked (:func:`numgrad.tracking.entries.check_entry`) and a bad one raises
    :class:`JournalError` naming the line. A last line without its newline is still
    being written: it waits for the next call, unless ``final`` says the writer is
    done, when it is a write cut short (``torn``) and everything before it is good.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        self.runs: dict[str, str] = {}  # store URI -> run id there
        self.acked: dict[str, int] = {}  # store URI -> last seq it holds
        self.rows: dict[str, int] = {}  # store URI -> metric rows it holds of the next record
        self.last_seq = 0
        self.offset = 0
        self.lines = 0
        self.torn: str | None = None  # a torn last line, described
        self.torn_at: int | None = None  # its byte offset

    @property
    def start(self) -> dict[str, Any]:
        return self.entries[0]

    @property
    def end(self) -> dict[str, Any] | None:
        """The ``end`` record (final status), None while the run has none."""
        return next((e for e in reversed(self.entries) if e["kind"] == "end"), None)

    def pending(self, uri: str) -> list[dict[str, Any]]:
        """The records the store at ``uri`` has not acknowledged, in order."""
        done = self.acked.get(uri, 0)
        return [e for e in self.entries if e["seq"] > done]

    def synced(self, uri: str) -> bool:
        """True when the store at ``uri`` holds every record and the run has ended there."""
        return uri in self.runs and not self.pending(uri) and self.end is not None

    def read_new(self, *, final: bool = False) -> JournalReader:
        """Read what was written since the last call (see the class's docstring)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError as exc:
            raise JournalError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        whole = data[: data.rfind(b"\n") + 1]
        for raw in whole.splitlines(keepends=True):
            self.lines += 1
            self._take(raw)
            self.offset += len(raw)
        rest = data[len(whole) :]
        if final and rest.strip():  # a write cut short by a crash: everything before is good
            self.torn = f"line {self.lines + 1} ({len(rest)} bytes, cut short)"
            self.torn_at = self.offset
        if final and not self.entries:
            raise JournalError(f"{self.path} does not begin with the run's start record")
        return self

    def _take(self, raw: bytes) -> None:
        if not raw.strip():
            return
        where = f"{self.path}: line {self.lines}"
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(f"{len(raw)} bytes long")
            entry = json.loads(raw)
        except ValueError:
            raise JournalError(f"{where} is not a journal record") from None
        if isinstance(entry, dict) and entry.get("kind") == "start":
            version = entry.get("format", FORMAT)
            if isinstance(version, int) and version > FORMAT:
                raise JournalError(f"{self.path} was written by a newer numgrad (format {version})")
        try:
            check_entry(entry)
            if not self.entries and entry["kind"] in DATA_KINDS:
                check_start(entry)
        except ValueError as exc:
            raise JournalError(f"{where}: {exc}") from None
        if entry["seq"] <= self.last_seq:  # acks count on it: "every record up to seq"
            raise JournalError(f"{where}: seq={entry['seq']} does not follow seq={self.last_seq}")
        self.last_seq = entry["seq"]
        kind = entry["kind"]
        if kind == "run":
            self.runs[entry["uri"]] = entry["run_id"]
        elif kind == "ack":
            uri = entry["uri"]
            if entry["seq_acked"] >= self.acked.get(uri, 0):
                self.acked[uri], self.rows[uri] = entry["seq_acked"], entry.get("rows", 0)
        else:
            self.entries.append(entry)


def read_journal(path: Path) -> JournalReader:
    """Read a whole journal; raise :class:`JournalError` when it cannot be trusted."""
    return JournalReader(path).read_new(final=True)
