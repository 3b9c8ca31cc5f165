"""How a record reaches MLflow: one journal's pending records brought into one store.

The live run, a sweep's sender and ``numgrad-sync`` all send through an
:class:`Uploader`, and nothing else writes a run to a store. It

- creates the run a journal's ``start`` describes, once (the journal then records
  its id: a ``run`` record), or goes on in the run the journal names;
- checks the paths a record names before anything of it is sent: an artifact or a
  model's weights must lie inside the journal's own folder, symlinks resolved;
- sends the records in order, metrics, params and tags in shared batches, and
  acknowledges each batch as it is stored (an ``ack`` record: how far the store
  holds the journal, down to the metric row), so an interrupted upload resumes
  where it stopped instead of sending again what the store has.

Only the journal's owner appends to it: its writer (the live run), or whoever holds
its lock once the writer is done (``numgrad-sync``, a sweep's sender). An uploader
that does not own the journal yet keeps its bookkeeping in memory and writes it when
the journal has ended (:meth:`Uploader.record_where_it_went`).

Sending twice is harmless: the SQL store ignores a metric value it already holds
(same key, step, timestamp and value), params and tags are rewritten with the same
value, a dataset input the run has is not added again, a logged model is found by its
key before one is made, and the end status is set again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import filelock

from numgrad import signals
from numgrad.processes import writer_gone
from numgrad.tracking.batches import Run, Sent, batches, send
from numgrad.tracking.entries import PathError, check_paths
from numgrad.tracking.journal import Journal, JournalReader
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import UPLOADER_TAG

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "numgrad.journal_key"  # a run's journal: no journal ever makes two runs
UPLOAD_ERROR_TAG = "numgrad.upload_error"  # on a run whose upload broke off; gone once complete


class JournalBusy(Exception):
    """Another process owns the journal (its live run, a sweep's sender, another sync)."""


def journal_lock(path: Path, timeout: float = 0.0) -> filelock.BaseFileLock:
    """The lock a journal's owner holds (``<journal>.lock``); raise :class:`JournalBusy`
    when another process holds it past ``timeout`` seconds."""
    lock = filelock.FileLock(f"{path}.lock", timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise JournalBusy(f"{path} is being written or uploaded by another process") from None
    return lock


class Uploader:
    """Brings the records of ``reader``'s journal into ``store`` (see the module's docstring).

    ``journal`` is the journal's open writer when the caller owns it; None when its
    writer may still be writing. ``parent_run_id`` makes a new run a child of that run.
    ``made``: the runs this process made for journal keys, when no other process can
    have made one for this journal (a child of a parent run this process made): the
    run is looked up there, not searched for in the store, and a new one is added.
    """

    def __init__(
        self,
        store: MlflowStore,
        reader: JournalReader,
        *,
        journal: Journal | None = None,
        parent_run_id: str | None = None,
        experiment_id: str | None = None,
        made: dict[str, str] | None = None,
    ) -> None:
        self.store, self.reader, self.journal = store, reader, journal
        self.uri = store.uri
        self.parent_run_id, self.experiment_id = parent_run_id, experiment_id
        self.run_id: str | None = reader.runs.get(self.uri)
        self.acked, self.rows = reader.acked.get(self.uri, 0), reader.rows.get(self.uri, 0)
        self.sent = Sent()
        self.made, self.made_here = made, False  # made_here: this uploader made the run
        self._run: Run | None = None  # where batches go, once the run is open
        self.recorded = False  # the run id and ack are written into the ended journal
        self._checked_run = False
        self._repair = False  # an earlier upload broke off: its tag goes once complete

    @property
    def base_dir(self) -> Path:
        return self.reader.path.parent

    @property
    def done(self) -> bool:
        """The store holds every record read so far."""
        entries = self.reader.entries
        return self.run_id is not None and (not entries or self.acked >= entries[-1]["seq"])

    def upload(self) -> Sent:
        """Read what is new, check it, then send what the store lacks; raise on failure
        (an outage, a refused record, a path outside the journal's folder)."""
        self.reader.read_new()
        pending = [e for e in self.reader.entries if e["seq"] > self.acked]
        for entry in pending:
            try:
                check_paths(entry, self.base_dir)
            except PathError as exc:  # name the journal and the record, as a bad line is
                where = f"{self.reader.path}: record {entry['seq']} ({entry['kind']})"
                raise PathError(f"{where}: {exc}") from None
        self._open_run()
        if self._run is None:  # new while made here and no model tried in it yet
            self._run = Run(self.store, self.run_id, self.experiment_id, self.base_dir,
                            self.made_here, self.sent)  # fmt: skip
        run = self._run
        try:
            for batch, upto in batches(pending, self.acked, self.rows):
                with signals.held():  # a batch and its acknowledgement go together
                    send(run, batch)
                    self.acked, self.rows = upto
                    self._append("ack", uri=self.uri, seq_acked=upto[0], rows=upto[1])
        except BaseException as exc:
            self._broke_off(exc)
            raise
        if self._repair and self.reader.end is not None and self.done:
            self.store.call(self.store.client.delete_tag, self.run_id, UPLOAD_ERROR_TAG)
            self._repair = False
        return self.sent

    def record_where_it_went(self) -> None:
        """Write the run id and the store's ack into an ended journal (its writer is
        done), also after an outage: ``numgrad-sync`` then goes on in that run."""
        if self.run_id is None or self.recorded:
            return
        if self.journal is None:
            journal, _ = Journal.reopen(self.reader.path)
            try:
                journal.append("run", uri=self.uri, run_id=self.run_id)
                journal.append("ack", uri=self.uri, seq_acked=self.acked, rows=self.rows)
            finally:
                journal.close()
        self.recorded = True

    # ------------------------------------------------------------------ the run

    def _open_run(self) -> None:
        if self.run_id is not None and not self._checked_run and self.journal is not None:
            run = self.store.get_run(self.run_id)  # a store that lost the run gets it anew
            if run is None:
                self.run_id, self.acked, self.rows = None, 0, 0
            else:
                self._repair = UPLOAD_ERROR_TAG in run.data.tags
        self._checked_run = True
        if self.run_id is not None:
            return
        start = self.reader.start
        tags = dict(start.get("tags") or {})
        if start["uri"] != self.uri:  # a parent id belongs to the store the journal names
            tags.pop(PARENT_TAG, None)
        if self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        if tags.get("numgrad.pid") != str(os.getpid()):  # sent for a writer that is gone:
            tags[UPLOADER_TAG] = str(os.getpid())  # another's reconcile must not end it KILLED
        experiment_id = self.experiment_id or self.store.experiment_id(start["experiment"])
        self.experiment_id = experiment_id
        if PARENT_TAG not in tags:  # a top-level run: runs of dead processes end KILLED
            self.store.reconcile_orphans(experiment_id)
        self.acked, self.rows = 0, 0
        key = start.get("key")
        if key:  # the journal's own id: a run made for it before (its run record lost) is it
            tags[KEY_TAG] = key
            self.run_id = self._run_for(key, experiment_id)
        if self.run_id is None:
            self.run_id = self.store.create_run(
                experiment_id, run_name=start["run_name"], tags=tags, start_time=start["start_time"]
            )
            self.made_here = True
            if key and self.made is not None:
                self.made[key] = self.run_id
        self._append("run", uri=self.uri, run_id=self.run_id)

    def _run_for(self, key: str, experiment_id: str) -> str | None:
        if self.made is not None:
            return self.made.get(key)
        found = self.store.search_runs([experiment_id], f"tags.`{KEY_TAG}` = '{key}'")
        return found[0].info.run_id if found else None

    def _append(self, kind: str, **fields: Any) -> None:
        if self.journal is not None:
            self.journal.append(kind, **fields)
            self.journal.flush()

    def _broke_off(self, exc: BaseException) -> None:
        """Mark a run whose upload stopped part-way FAILED, so that it is never left
        RUNNING; the journal holds how far it got, and a later upload completes it."""
        if self.run_id is None or self.journal is None or self.reader.end is None:
            return  # not ours to end, or a live run that goes on
        signal = not isinstance(exc, Exception)  # Ctrl-C: tell the store, if it answers at once
        if (not signal and MlflowStore.is_outage(exc)) or (signal and not self.store.reachable(1)):
            return  # the store cannot be told anyway
        try:
            reason = "interrupted" if signal else f"{type(exc).__name__}: {exc}"[:500]
            with signals.held():  # a second Ctrl-C waits for these two calls
                self.store.call(self.store.client.set_tag, self.run_id, UPLOAD_ERROR_TAG, reason)
                self.store.terminate(self.run_id, "FAILED", int(time.time() * 1000))
            self._repair = True
        except Exception:
            pass  # the error being raised says what went wrong


def end_if_writer_gone(reader: JournalReader, *, dead_pid: str | None = None) -> bool:
    """End a journal KILLED when its run has no end and its writer is gone; True if so.

    Call it as the journal's owner (its lock held). The decision is taken on a fresh
    read, and only with evidence: the host, pid and start time of its start record
    name a process that no longer runs (or ``dead_pid``, a process known to be dead).
    """
    reader.read_new()
    if not reader.entries or reader.end is not None:
        return False
    tags = reader.start.get("tags") or {}
    dead = dead_pid is not None and tags.get("numgrad.pid") == dead_pid
    if not (dead or writer_gone(tags, reader.start["start_time"])):
        return False
    journal, _ = Journal.reopen(reader.path)
    try:
        journal.end_killed(reader.entries)
    finally:
        journal.close()
    reader.read_new()
    return True
