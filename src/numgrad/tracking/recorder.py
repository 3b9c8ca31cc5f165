"""One tracked MLflow run: every record goes to the local journal first, then to the store.

The journal (``tracking_journal.jsonl`` in the run's folder) is written and flushed to
disk before the store is asked for anything, so an unreachable store never stops the
run and never loses a record. The run owns its journal (it holds the journal's lock)
and sends it through an :class:`~numgrad.tracking.uploader.Uploader`, the one road
to the store:

- a failed send marks the store *down*; the run goes on, and sending is retried with
  capped back-off (:class:`~numgrad.tracking.backoff.Backoff`: 1 s, 2 s, ... 30 s),
  from the first record the store has not acknowledged, when the store answers again;
- at the end the recorder waits at most ``grace`` seconds for a store that is down;
  if it does not come back, the run is recorded locally only (:attr:`synced` is False)
  and ``numgrad-sync`` uploads it later;
- ``offline`` never contacts a store (mlflow is not even imported);
- ``handed_over``: neither does it, but the journal is the sweep's sender's to send
  (:mod:`numgrad.tracking.sender`): for the run, that is as good as sent.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from numgrad import signals
from numgrad.tracking.backoff import Backoff
from numgrad.tracking.entries import FORMAT
from numgrad.tracking.journal import (
    JOURNAL_FILE,
    Journal,
    JournalError,
    JournalReader,
    read_journal,
)
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import ACTIVE_RUNS
from numgrad.tracking.records import describe_error, short_message
from numgrad.tracking.uploader import Uploader, journal_lock
from numgrad.tracking.uri import TrackingError

FINAL_RETRY = 1.0  # during the end-of-run grace period: retry every second
PROBE_SECONDS = 1.0  # a tracking server that does not answer /health this fast is down
AT_END = "at the end of the run"
LOCK_SECONDS = 10.0  # a reused run dir's earlier journal may be being synced: wait this long


class Recorder:
    """Journal and store of one run; :meth:`start`, then records, then :meth:`finish`.

    ``directory`` holds the journal (and the files its ``artifact`` records name).
    """

    def __init__(
        self,
        directory: Path,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        offline: bool = False,
        handed_over: bool = False,
        grace: float = 30.0,
    ) -> None:
        self.directory, self.uri, self.experiment = directory, uri, experiment
        self.run_name, self.offline, self.grace = run_name, offline, grace
        self.handed_over = handed_over
        self.journal: Journal | None = None
        self.uploader: Uploader | None = None
        self.synced = self._ended = False  # the store has it all; its end is journaled
        self.backoff = Backoff()
        self._lock: Any = None

    @property
    def run_id(self) -> str | None:
        return None if self.uploader is None else self.uploader.run_id

    @property
    def experiment_id(self) -> str | None:
        return None if self.uploader is None else self.uploader.experiment_id

    @property
    def journal_path(self) -> Path:
        return self.directory / JOURNAL_FILE

    def start(
        self,
        *,
        tags: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        kind: str = "run",
        **identity: Any,
    ) -> None:
        """Write the run's start (and params) to a new journal; create the run in the store.

        A store that cannot be opened here raises :class:`TrackingError` and leaves no
        journal behind: nothing has run yet.
        """
        try:
            if not self.handed_over:  # the run sends its own journal: it owns it
                with signals.held():  # held, or a signal could leave the lock file behind
                    self._lock = journal_lock(self.journal_path, timeout=LOCK_SECONDS)
            self.journal = Journal.create(self.journal_path)
            self.record(
                "start", format=FORMAT, type=kind, uri=self.uri, experiment=self.experiment,
                run_name=self.run_name, start_time=int(time.time() * 1000), tags=dict(tags),
                key=uuid.uuid4().hex, **identity,
                **({"handed_over": True} if self.handed_over else {}),
            )  # fmt: skip
            if params:
                self.record("params", params=dict(params))
            self.journal.sync()
        except BaseException:  # a signal, or the disk: no run, no journal (and none open)
            if self.journal is not None:
                self.journal.close_quietly()
                self.journal = None
            self.journal_path.unlink(missing_ok=True)
            self._release(remove=True)
            raise
        if self.offline or self.handed_over:
            return
        try:
            store = MlflowStore(self.uri).open()
            self.uploader = Uploader(store, JournalReader(self.journal_path), journal=self.journal)
            self.uploader.upload()
        except BaseException as exc:
            if self.run_id is not None and isinstance(exc, Exception):  # never left RUNNING
                self.abandon("FAILED", describe_error(exc))
            elif self.run_id is not None:  # a signal: KILLED, like a run stopped later
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
                self.abandon("KILLED", why, tag="numgrad.stop_reason")
            self.journal.close_quietly()
            self.journal_path.unlink(missing_ok=True)
            self.journal, self.uploader = None, None
            self._release(remove=True)
            if isinstance(exc, TrackingError) or not isinstance(exc, Exception):
                raise
            raise TrackingError(
                f"cannot create an MLflow run on {self.uri}: {short_message(exc)}"
            ) from exc
        ACTIVE_RUNS.add(self.run_id)

    def record(self, kind: str, **fields: Any) -> None:
        """Append one record to the journal; it goes to the store at the next push."""
        assert self.journal is not None, "start() first"
        self.journal.append(kind, **fields)

    def flush(self, *, where: str = "") -> None:
        """Journal to disk, then try the store (unless it is down and not yet due)."""
        assert self.journal is not None
        self.journal.sync()
        self.push(where=where)

    def push(self, *, where: str = "") -> bool:
        """Send the unacknowledged records; True when the store holds them all."""
        if self.uploader is None or not self.backoff.due():
            return False
        store = self.uploader.store
        # A server that is down or hung (it takes connections, never answers) costs the
        # descent one short /health, not the HTTP client's 10 s timeout and retries.
        if (self.backoff.down_since is not None or store.db is None) and not store.reachable(
            PROBE_SECONDS
        ):
            self._mark_down(TimeoutError(f"no answer from /health in {PROBE_SECONDS:g} s"), where)
            return False
        try:
            self.journal.flush()
            self.uploader.upload()
        except Exception as exc:
            if not MlflowStore.is_outage(exc) or isinstance(exc, JournalError):
                raise TrackingError(
                    f"the MLflow store {self.uri} refused a record of run {self.run_id}: "
                    f"{short_message(exc)}"
                ) from exc
            self._mark_down(exc, where)
            return False
        took = self.backoff.succeeded()
        if took is not None:
            print(f"numgrad: the tracking store {self.uri} answers again after {took:.0f} s; "
                  "the run's records are caught up", file=sys.stderr)  # fmt: skip
        return True

    def end(self, status: str, *, end_time: int | None = None) -> None:
        """Journal the run's end (once), to disk: from here on the run is ended ``status``."""
        assert self.journal is not None
        if not self._ended:
            self.record("end", status=status, end_time=end_time or int(time.time() * 1000))
            self.journal.sync()
            self._ended = True

    def finish(self, status: str, *, end_time: int | None = None) -> bool:
        """Record the end, wait at most ``grace`` s for a store that is down; True if synced."""
        assert self.journal is not None
        try:
            self.end(status, end_time=end_time)
            if self.uploader is None:
                self.synced = self.handed_over
                return self.synced
            deadline = time.monotonic() + self.grace
            self.backoff.hurry(FINAL_RETRY)
            while not self.push(where=AT_END):
                now = time.monotonic()
                if now >= deadline:
                    return False
                time.sleep(max(0.0, min(self.backoff.retry_at, deadline) - now))
            self.synced = True
            return True
        finally:
            self.journal.close_quietly()  # a failed write has raised already
            self._release()
            if self.run_id is not None:
                ACTIVE_RUNS.discard(self.run_id)

    def abandon(self, status: str, reason: str, tag: str = "numgrad.error") -> None:
        """End the store's run without its journal (which cannot be written: disk full),
        so that it is never left RUNNING; ``numgrad-sync`` completes it from the journal."""
        if self.uploader is None or self.run_id is None:
            return
        try:
            self.uploader.store.call(self.uploader.store.client.set_tag, self.run_id,
                                     tag, reason[:5000])  # fmt: skip
            self.uploader.store.terminate(self.run_id, status, int(time.time() * 1000))
        except Exception as exc:
            print(f"numgrad: could not end run {self.run_id}: {describe_error(exc)}",
                  file=sys.stderr)  # fmt: skip

    def cannot_write(self, exc: JournalError, status: str) -> JournalError:
        """A run whose files cannot be written (disk full): its store run ended ``status``
        (never RUNNING), and the one error that says how to go on."""
        self.abandon(status, str(exc))
        return JournalError(f"{exc}; once there is room, numgrad-sync {self.directory} "
                            "uploads what was journaled")  # fmt: skip

    def local_note(self, why: str = "") -> str:
        """The line that says where an unsynced run is (``why``), and how to upload it."""
        why = why or (
            "offline" if self.offline else f"the tracking store {self.uri} is unreachable"
        )
        return f"{why}: the run is recorded locally in {self.journal_path}; upload it with: " + (
            f"numgrad-sync {self.directory}"
        )

    def _release(self, *, remove: bool = False) -> None:
        if self._lock is not None:
            if remove:  # a run that never started leaves nothing behind
                Path(self._lock.lock_file).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def _mark_down(self, exc: BaseException, where: str) -> None:
        if self.backoff.down_since is None:
            then = (
                f"waiting up to {self.grace:g} s for it"
                if where == AT_END
                else "the run goes on, and is sent when the store answers again"
            )
            print(
                f"numgrad: lost the tracking store {self.uri}{' ' + where if where else ''} "
                f"({describe_error(exc)}); recorded in {self.journal_path}; {then}",
                file=sys.stderr,
            )
        self.backoff.failed()


def set_aside_previous(directory: Path, companions: Sequence[str] = ()) -> None:
    """A reused folder (a fixed ``hydra.run.dir``): make way for a new run's journal.

    An earlier journal that its store holds completely is removed, with the
    ``companions`` (files or folders its records name); one that is not (or cannot
    be read) is moved, with them, into ``previous-<n>/``, where ``numgrad-sync`` still
    finds it.
    """
    journal = directory / JOURNAL_FILE
    if not journal.exists():
        return
    try:
        view = read_journal(journal)
        done = view.synced(view.start["uri"])
    except JournalError:
        done = False
    if done:
        journal.unlink()
        for name in companions:
            shutil.rmtree(directory / name, ignore_errors=True)
        return
    n = 1
    while (directory / f"previous-{n}").exists():
        n += 1
    aside = directory / f"previous-{n}"
    aside.mkdir()
    journal.rename(aside / JOURNAL_FILE)
    for name in companions:
        if (directory / name).exists():
            (directory / name).rename(aside / name)
    print(f"numgrad: {directory} held an earlier run not yet uploaded: kept in {aside}",
          file=sys.stderr)  # fmt: skip
