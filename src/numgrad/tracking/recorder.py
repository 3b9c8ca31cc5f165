"""One tracked MLflow run: every record goes to the local journal first, then to the store.

The journal (``tracking_journal.jsonl`` in the run's folder) is written and flushed to
disk before the store is asked for anything, so an unreachable store never stops the
run and never loses a record:

- a failed send marks the store *down*; the run goes on, and sending is retried with
  capped back-off (1 s, 2 s, ... 30 s), from the first record the store has not
  acknowledged, when the store answers again;
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from numgrad.tracking import replay
from numgrad.tracking.journal import FORMAT, JOURNAL_FILE, Journal, JournalError, read_journal
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import ACTIVE_RUNS
from numgrad.tracking.records import describe_error, short_message
from numgrad.tracking.uri import TrackingError

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0  # seconds between retries while the store is down
FINAL_RETRY = 1.0  # during the end-of-run grace period: retry every second
AT_END = "at the end of the run"


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
        self.store: MlflowStore | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.synced = False
        self._unsent: list[dict[str, Any]] = []
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._max_backoff = BACKOFF_MAX
        self._down_since: float | None = None

    @property
    def store_down(self) -> bool:
        """True while the store is known not to answer (sending is being retried)."""
        return self._down_since is not None

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
        self.journal = Journal.create(self.journal_path)
        self.record(
            "start", format=FORMAT, type=kind, uri=self.uri, experiment=self.experiment,
            run_name=self.run_name, start_time=int(time.time() * 1000), tags=dict(tags),
            **identity, **({"handed_over": True} if self.handed_over else {}),
        )  # fmt: skip
        if params:
            self.record("params", params=dict(params))
        self.journal.sync()
        if self.offline or self.handed_over:
            return
        try:
            store = MlflowStore(self.uri).open()
            self.experiment_id = store.experiment_id(self.experiment)
            if not (tags.get(replay.PARENT_TAG)):  # a sweep's parent did it for its jobs
                store.reconcile_orphans(self.experiment_id)
            start = self._unsent[0]
            self.run_id = replay.open_run(store, start, experiment_id=self.experiment_id)
        except BaseException as exc:
            self.journal.close()
            self.journal_path.unlink(missing_ok=True)
            self.journal = None
            if isinstance(exc, TrackingError) or not isinstance(exc, Exception):
                raise
            raise TrackingError(
                f"cannot create an MLflow run on {self.uri}: {short_message(exc)}"
            ) from exc
        self.store = store
        ACTIVE_RUNS.add(self.run_id)
        self.journal.append("run", uri=self.uri, run_id=self.run_id)
        self.push()

    def record(self, kind: str, **fields: Any) -> None:
        """Append one record to the journal; it goes to the store at the next push."""
        assert self.journal is not None, "start() first"
        self._unsent.append(self.journal.append(kind, **fields))

    def flush(self, *, where: str = "") -> None:
        """Journal to disk, then try the store (unless it is down and not yet due)."""
        assert self.journal is not None
        self.journal.sync()
        self.push(where=where)

    def push(self, *, where: str = "") -> bool:
        """Send the unacknowledged records; True when the store holds them all."""
        if self.store is None or self.run_id is None:
            return False
        if not self._unsent:
            return True
        if self._down_since is not None:
            if time.monotonic() < self._retry_at or not self.store.reachable():
                self._schedule_retry()
                return False
        try:
            replay.send(self.store, self.run_id, self._unsent, self.directory)
        except Exception as exc:
            if not MlflowStore.is_outage(exc):
                raise TrackingError(
                    f"the MLflow store {self.uri} refused a record of run {self.run_id}: "
                    f"{short_message(exc)}"
                ) from exc
            self._mark_down(exc, where)
            return False
        self.journal.append("ack", uri=self.uri, seq_acked=self._unsent[-1]["seq"])
        self._unsent = []
        if self._down_since is not None:
            took = time.monotonic() - self._down_since
            print(f"numgrad: the tracking store {self.uri} answers again after {took:.0f} s; "
                  "the run's records are caught up", file=sys.stderr)  # fmt: skip
            self._down_since, self._backoff = None, BACKOFF_FIRST
        return True

    def finish(self, status: str, *, end_time: int | None = None) -> bool:
        """Record the end, wait at most ``grace`` s for a store that is down; True if synced."""
        assert self.journal is not None
        self.record("end", status=status, end_time=end_time or int(time.time() * 1000))
        try:
            self.journal.sync()
            if self.store is None:
                self.synced = self.handed_over
                return self.synced
            deadline = time.monotonic() + self.grace
            self._backoff = self._max_backoff = FINAL_RETRY  # the store may be back any moment
            self._retry_at = min(self._retry_at, time.monotonic() + FINAL_RETRY)
            while not self.push(where=AT_END):
                now = time.monotonic()
                if now >= deadline:
                    return False
                time.sleep(max(0.0, min(self._retry_at, deadline) - now))
            self.synced = True
            return True
        finally:
            self.journal.close()
            if self.run_id is not None:
                ACTIVE_RUNS.discard(self.run_id)

    def local_note(self) -> str:
        """The line that says where an unsynced run is, and how to upload it."""
        why = "offline" if self.offline else f"the tracking store {self.uri} is unreachable"
        return (
            f"{why}: the run is recorded locally in {self.journal_path}; upload it with: "
            f"numgrad-sync {self.directory}"
        )

    def _mark_down(self, exc: BaseException, where: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
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
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)


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
