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
A sweep's sender reads its jobs' journals while they grow (:class:`Followed`).

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     journal = Journal.create(Path(d) / JOURNAL_FILE)
...     _ = journal.append("start", uri="sqlite:///m.db", run_name="default")
...     _ = journal.append("metrics", metrics=[["loss", 0.5, 1700000000000, 0]])
...     journal.close()
...     view = read_journal(Path(d) / JOURNAL_FILE)
...     [e["kind"] for e in view.pending("sqlite:///m.db")], view.synced("sqlite:///m.db")
(['start', 'metrics'], False)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numgrad import signals
from numgrad.command import FAILED

JOURNAL_FILE = "tracking_journal.jsonl"
FORMAT = 1
DATA_KINDS = frozenset({"start", "params", "tags", "metrics", "artifact", "input", "model", "end"})
BOOKKEEPING_KINDS = frozenset({"run", "ack"})


class JournalError(Exception):
    """A journal that cannot be read (or written); the message names the file."""

    exit_status = FAILED


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
        torn = None
        if view.torn_at is not None:
            with open(path, "r+b") as f:
                f.truncate(view.torn_at)
            torn = view.skipped
        handle = open(path, "a", encoding="utf-8")
        return cls(path, handle, view.last_seq), torn

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one line (buffered) and return it as a dict; signals wait for the write."""
        self.seq += 1
        entry = {"seq": self.seq, "kind": kind, **fields}
        line = json.dumps(entry, allow_nan=False, separators=(",", ":")) + "\n"
        with signals.held():  # a line is written whole or not at all
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

    def sync(self) -> None:
        """Flush to the disk itself (fsync): what was appended survives a power cut."""
        with signals.held():
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


@dataclass
class JournalView:
    """A journal as read back: the run's records and what each store has of them."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # store URI -> run id there
    acked: dict[str, int] = field(default_factory=dict)  # store URI -> last seq it holds
    last_seq: int = 0
    skipped: str | None = None  # a torn last line, described
    torn_at: int | None = None  # its byte offset

    @property
    def start(self) -> dict[str, Any]:
        return self.entries[0]

    @property
    def end(self) -> dict[str, Any] | None:
        """The ``end`` record (final status), None when the process died first."""
        return next((e for e in reversed(self.entries) if e["kind"] == "end"), None)

    def pending(self, uri: str) -> list[dict[str, Any]]:
        """The records the store at ``uri`` has not acknowledged, in order."""
        done = self.acked.get(uri, 0)
        return [e for e in self.entries if e["seq"] > done]

    def synced(self, uri: str) -> bool:
        """True when the store at ``uri`` holds every record and the run has ended there."""
        return uri in self.runs and not self.pending(uri) and self.end is not None


def read_journal(path: Path) -> JournalView:
    """Read a journal; raise :class:`JournalError` when it cannot be trusted."""
    view = JournalView(path=Path(path))
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc.strerror or exc}") from None
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        last = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
        try:
            entry = json.loads(raw)
            kind, seq = entry["kind"], int(entry["seq"])
        except (ValueError, KeyError, TypeError):
            if last:  # a write cut short by a crash: everything before it is good
                view.skipped = f"line {number} ({len(raw)} bytes, cut short)"
                view.torn_at = start
                break
            raise JournalError(f"{path}: line {number} is not a journal record") from None
        view.last_seq = max(view.last_seq, seq)
        if kind == "run":
            view.runs[entry["uri"]] = entry["run_id"]
        elif kind == "ack":
            view.acked[entry["uri"]] = max(view.acked.get(entry["uri"], 0), int(entry["seq_acked"]))
        elif kind in DATA_KINDS:
            view.entries.append(entry)
        else:
            raise JournalError(f"{path}: line {number} has an unknown kind {kind!r}")
    if not view.entries or view.entries[0]["kind"] != "start":
        raise JournalError(f"{path} does not begin with the run's start record")
    if view.start.get("format", FORMAT) > FORMAT:
        raise JournalError(f"{path} was written by a newer numgrad (format {view.start['format']})")
    return view


@dataclass
class Followed:
    """One journal, read as it grows, and how much of it the store holds."""

    path: Path
    offset: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None
    experiment_id: str | None = None
    acked: int = 0
    closed: bool = False  # run and ack written into the journal: nothing left to do
    foreign: bool = False  # not handed over: its own process sends it

    @property
    def start(self) -> dict[str, Any] | None:
        return self.entries[0] if self.entries else None

    @property
    def end(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.entries) if e["kind"] == "end"), None)

    def read_new(self) -> None:
        """Read the complete lines written since the last read (a partial one waits)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        whole = data[: data.rfind(b"\n") + 1]
        for line in whole.splitlines(keepends=True):
            try:
                entry = json.loads(line) if line.strip() else None
            except ValueError:
                return  # not written whole yet: read it again next time
            self.offset += len(line)
            if entry and entry.get("kind") in DATA_KINDS:
                self.entries.append(entry)

    def state(self, uri: str) -> dict[str, Any]:
        end = self.end
        return {
            "run_id": self.run_id, "run_name": (self.start or {}).get("run_name"),
            "experiment_id": self.experiment_id,
            "status": end["status"] if end else None, "output_dir": str(self.path.parent),
            "synced": bool(end) and self.acked >= self.entries[-1]["seq"],
        }  # fmt: skip
