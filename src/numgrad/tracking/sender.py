"""A sweep's sender: one process that uploads a sweep's journals while its jobs write them.

A local sweep's jobs only journal (they never import mlflow); this process reads each
journal as it grows and sends it through an :class:`~numgrad.tracking.uploader.Uploader`,
the road every record takes. On the other core, MLflow costs the jobs nothing
(bench_sweep.py).

With ``uploaders`` above 1 it sends only some children itself and gives the others
to upload processes (:mod:`numgrad.tracking.upload_pool`); what they report stands in
for an uploader here. The process around it, and its protocol with the sweep, is
:mod:`numgrad.sweep.sender_process`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numgrad.tracking.backoff import Backoff
from numgrad.tracking.journal import JOURNAL_FILE, JournalReader
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.records import describe_error
from numgrad.tracking.upload_pool import UploadPool
from numgrad.tracking.uploader import JournalBusy, Uploader, end_if_writer_gone, journal_lock


class Tracked:
    """One journal the sender follows: its reader, and once it is sent, its uploader
    (here) or what the upload process it was given to last said of it (``remote``)."""

    def __init__(self, path: Path) -> None:
        self.path, self.reader = path, JournalReader(path)
        self.uploader: Uploader | None = None
        self.lock: Any = None
        self.foreign = False  # not handed over: its own process sends it (a job on Ray)
        self.slot: int | None = None  # who sends it: 0 this process, n upload process n
        self.remote: dict[str, Any] = {}  # upload process n's last word on it

    @property
    def run_id(self) -> str | None:
        return self.remote.get("run_id") if self.uploader is None else self.uploader.run_id

    @property
    def closed(self) -> bool:
        """Ended, sent, and its run id written into it: nothing left to do."""
        up = self.uploader
        return bool(self.remote.get("recorded")) if up is None else up.recorded

    @property
    def done(self) -> bool:
        """The store holds every record read here so far."""
        if self.uploader is not None:
            return self.uploader.done
        # Its upload process's word, unless this process has read records it had not
        # (once recorded, it had read the end: what follows is that record's own).
        said, entries = self.remote, self.reader.entries
        return bool(said.get("done")) and (
            said["recorded"] or not entries or entries[-1]["seq"] <= said["seq"]
        )

    def state(self) -> dict[str, Any]:
        end = self.reader.end
        up = self.uploader
        return {
            "run_id": self.run_id,
            "run_name": self.reader.start.get("run_name") if self.reader.entries else None,
            "experiment_id": self.remote.get("experiment_id") if up is None else up.experiment_id,
            "status": end["status"] if end else None, "output_dir": str(self.path.parent),
            "synced": bool(end) and self.done,
        }  # fmt: skip


class Sender:
    """The sender's work, one :meth:`send_all` at a time (see the module's docstring)."""

    owns_parent = True  # its journal is this process's to end KILLED

    def __init__(self, sweep_dir: Path, uri: str, *, uploaders: int = 1) -> None:
        self.sweep_dir, self.uri = sweep_dir, uri
        self.pool = UploadPool(sweep_dir, uri, uploaders - 1) if uploaders > 1 else None
        self.store: MlflowStore | None = None
        self.parent = Tracked(sweep_dir / JOURNAL_FILE)
        self.children: dict[Path, Tracked] = {}
        self.backoff = Backoff()
        self.error: str | None = None
        self.made: dict[str, str] = {}  # journal key -> the child run made for it here
        self.experiments: dict[str, str] = {}  # name -> id: looked up once, not per child
        self.busy = False  # the last pass sent something: more may be waiting

    def send_all(self, *, children: bool = True, parent: bool = True) -> bool:
        """Send what is new; False while the store does not answer (retried with back-off)."""
        self.busy = False  # (a store in back-off is no reason to read again at once)
        if not self.backoff.due():
            return False
        try:
            if self.store is None:
                self.store = MlflowStore(self.uri).open()
            if parent:
                self._send(self.parent, parent_run_id=None)
            if children and self.pool is not None:
                self._give_out()
            link = self._link()
            if children and link is not None:
                for tracked in self._children():
                    if self.pool is None or tracked.slot == 0:  # not one given away
                        self._send(tracked, parent_run_id=link[0])
        except Exception as exc:
            if self.store is not None and not MlflowStore.is_outage(exc):
                self.error = describe_error(exc)
                raise
            self.backoff.failed()
            return False
        self.backoff.succeeded()
        return True

    def _link(self) -> tuple[str, bool] | None:
        """The parent run children go under, and whether this process made it."""
        up = self.parent.uploader
        return None if up is None or up.run_id is None else (up.run_id, up.made_here)

    def _give_out(self) -> None:
        """Hear what the upload processes said; give each new child journal of this sweep
        to this process or an upload process (:meth:`UploadPool.give`)."""
        self.busy |= self.pool.hear(self.children)
        self.error = self.error or self.pool.error
        for t in self.children.values():  # their ends, read here too: the sweep asks for them
            if t.slot and t.reader.end is None:
                t.reader.read_new()
        if self.parent.reader.entries:  # (which journals are an earlier sweep's: known)
            load = [[0, 0] for _ in range(len(self.pool.slots) + 1)]  # [ended, all] unclosed
            for t in self.children.values():
                if t.slot is not None and not t.closed:
                    load[t.slot][0] += t.reader.end is not None
                    load[t.slot][1] += 1
            for t in self._children():
                if t.slot is None and self._ours(t):
                    t.slot = self.pool.give(t.path, load, ended=t.reader.end is not None)
                    if t.slot is not None:
                        load[t.slot][0] += t.reader.end is not None
                        load[t.slot][1] += 1
        if (link := self._link()) is not None:
            self.pool.linked(*link)

    def _ours(self, t: Tracked) -> bool:
        """Read what is new; True when this sender sends the journal (else it is foreign)."""
        if t.foreign or not t.path.exists():
            return False
        t.reader.read_new()
        if t.reader.entries and t.uploader is None:
            # Not handed over (it sends itself: a job on Ray), or left in a reused sweep dir
            # by an earlier sweep (started before this sweep's parent): not this sender's.
            t.foreign = not t.reader.start.get("handed_over") or self._earlier(t)
        return bool(t.reader.entries) and not t.foreign

    def _earlier(self, t: Tracked) -> bool:
        """A child journal an earlier sweep left in a reused sweep dir (started before it)."""
        parent = self.parent.reader
        return bool(parent.entries) and t.reader.start["start_time"] < parent.start["start_time"]

    def _children(self) -> list[Tracked]:
        for path in sorted(self.sweep_dir.glob(f"*/{JOURNAL_FILE}")):
            self.children.setdefault(path, Tracked(path))
        return list(self.children.values())

    def _send(self, t: Tracked, parent_run_id: str | None) -> None:
        if t.closed or not self._ours(t):
            return
        if t.uploader is None:
            try:
                t.lock = journal_lock(t.path)
            except JournalBusy:
                return  # numgrad-sync has it now: try again later
            # Children of a parent run made here: no run can exist for their journals but
            # those made here (keys are per journal), so none is searched for.
            made = self.made if parent_run_id and self._link()[1] else None
            experiment_id = self.experiments.get(t.reader.start["experiment"])
            t.uploader = Uploader(self.store, t.reader, parent_run_id=parent_run_id,
                                  experiment_id=experiment_id, made=made)  # fmt: skip
        acked = t.uploader.acked, t.uploader.rows, t.uploader.run_id
        t.uploader.upload()
        if t.uploader.experiment_id is not None:
            self.experiments[t.reader.start["experiment"]] = t.uploader.experiment_id
        self.busy |= acked != (t.uploader.acked, t.uploader.rows, t.uploader.run_id)
        if t.reader.end is not None:  # its writer is done: the journal records where it went
            self._close(t)

    def _close(self, t: Tracked) -> None:
        t.uploader.record_where_it_went()
        if t.lock is not None:
            t.lock.release()
            t.lock = None

    def give_up(self) -> None:
        """The sweep is over: every ended journal the store holds part of says so."""
        if self.pool is not None:
            self.pool.request("give_up", self.children)
        for t in [*self.children.values(), self.parent]:
            if t.uploader is not None and not t.closed and t.run_id is not None and t.reader.end:
                self._close(t)

    def end_the_dead(self, *, sweep_gone: bool = False) -> None:
        """Journals whose process died without an end (SIGKILL) end KILLED; with
        ``sweep_gone``, the sweep's own and those of jobs that ran in its process."""
        if self.parent.path.exists():
            self.parent.reader.read_new()
        parent_tags = (self.parent.reader.start if self.parent.reader.entries else {}).get("tags")
        sweep_pid = (parent_tags or {}).get("numgrad.pid") if sweep_gone else None
        if self.pool is not None:  # each ends those it was given, as their lock's owner
            self._give_out()
            self.pool.request("end_the_dead", self.children, sweep_gone=sweep_gone)
        for t in self._children():
            if t.foreign or t.slot or not t.path.exists():
                continue
            t.reader.read_new()
            if t.reader.entries and not self._earlier(t):
                end_if_writer_gone(t.reader, dead_pid=sweep_pid)
        if sweep_gone and self.owns_parent and self.parent.path.exists():
            end_if_writer_gone(self.parent.reader, dead_pid=sweep_pid)

    def remote_children(self) -> list[dict[str, Any]]:
        """The parent's children that no journal here holds: jobs that ran elsewhere."""
        if self.store is None or self.parent.run_id is None:
            return []
        known = {t.run_id for t in self.children.values()}
        found = self.store.call(self.store.client.search_experiments, max_results=1000)
        runs = self.store.search_runs(
            [e.experiment_id for e in found], f"tags.mlflow.parentRunId = '{self.parent.run_id}'"
        )
        return [_run_row(r) for r in runs if r.info.run_id not in known]

    def followed(self) -> list[Tracked]:
        """This sweep's child journals: written, not a job elsewhere's, not an earlier sweep's."""
        return [t for t in self.children.values()
                if t.reader.entries and not t.foreign and not self._earlier(t)]  # fmt: skip

    def state(self) -> dict[str, Any]:
        remote = []
        if self.error is None:
            try:
                remote = self.remote_children()
            except Exception as exc:  # a store that does not answer: no runs found elsewhere
                if not MlflowStore.is_outage(exc):
                    self.error = describe_error(exc)
        return {
            "event": "state", "uri": self.uri, "error": self.error,
            "parent": self.parent.state(), "remote": remote,
            "children": {
                str(p): t.state() for p, t in self.children.items()
                if not t.foreign and t.reader.entries and not self._earlier(t)
            },
        }  # fmt: skip

    def hurry(self) -> None:
        """The store may be back any moment: try again now, here and in the upload processes."""
        self.backoff.succeeded()
        if self.pool is not None:
            self.pool.hurry()

    def close(self) -> None:
        """End the upload processes, if any."""
        if self.pool is not None:
            self.pool.close()


def _run_row(run: Any) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
        "output_dir": tags.get("numgrad.output_dir"),
        "overrides": tags.get("numgrad.overrides", ""),
        "error": tags.get("numgrad.error", ""), "metrics": dict(run.data.metrics),
        "params": dict(run.data.params), "synced": True,
    }  # fmt: skip
