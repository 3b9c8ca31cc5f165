"""A sweep's sender: one process that uploads a sweep's journals while its jobs write them.

A local sweep's jobs only journal (they never import mlflow); this process reads each
journal as it grows and sends it with :func:`numgrad.tracking.replay.send`, the path
every record takes. On the other core, MLflow costs the jobs nothing (bench_sweep.py).

It talks to the sweep over its stdin and stdout, one JSON object a line:

- it says ``{"event": "parent", "run_id": ...}`` once the parent run exists (a
  sweep whose jobs run elsewhere, on Ray, waits for it), or ``{"event": "error"}``;
- ``drain`` (jobs done): it ends the journals of processes that died without an end
  (KILLED), sends every child's journal, and answers ``{"event": "state", ...}``:
  each journal's run id, status and whether the store has it all, and the runs of
  the parent's children that no journal here holds (jobs on other machines);
- ``finish`` (the parent's journal ended too): the same for the parent, then it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

from numgrad.tracking import replay
from numgrad.tracking.journal import JOURNAL_FILE, Followed, Journal
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import ACTIVE_RUNS, process_gone
from numgrad.tracking.records import describe_error

POLL_SECONDS = 0.5  # how often journals are read: the UI's live curves lag this much
BACKOFF_MAX = 30.0


class Sender:
    """The sender's work, one :meth:`send_all` at a time (see the module's docstring)."""

    def __init__(self, sweep_dir: Path, uri: str) -> None:
        self.sweep_dir, self.uri = sweep_dir, uri
        self.store: MlflowStore | None = None
        self.parent = Followed(sweep_dir / JOURNAL_FILE)
        self.children: dict[Path, Followed] = {}
        self.retry_at, self.backoff = 0.0, 1.0
        self.error: str | None = None

    def send_all(self, *, children: bool = True, parent: bool = True) -> bool:
        """Send what is new; False while the store does not answer (retried with back-off)."""
        if time.monotonic() < self.retry_at:
            return False
        try:
            if self.store is None:
                self.store = MlflowStore(self.uri).open()
            if parent:
                self._send(self.parent, parent_run_id=None)
            if children and self.parent.run_id is not None:
                for path in sorted(self.sweep_dir.glob(f"*/{JOURNAL_FILE}")):
                    followed = self.children.setdefault(path, Followed(path))
                    self._send(followed, parent_run_id=self.parent.run_id)
        except Exception as exc:
            if self.store is not None and not MlflowStore.is_outage(exc):
                self.error = describe_error(exc)
                raise
            self.retry_at = time.monotonic() + self.backoff
            self.backoff = min(2 * self.backoff, BACKOFF_MAX)
            return False
        self.backoff = 1.0
        return True

    def _send(self, f: Followed, parent_run_id: str | None) -> None:
        if f.closed:
            return
        f.read_new()
        if f.start is None:
            return
        if not f.start.get("handed_over"):  # its own process sends it (a job on Ray)
            f.closed = f.foreign = True
            return
        if f.run_id is None:
            f.experiment_id = self.store.experiment_id(f.start["experiment"])
            if parent_run_id is None:  # the sweep's start: runs of dead processes end KILLED
                self.store.reconcile_orphans(f.experiment_id)
            f.run_id = replay.open_run(
                self.store, f.start, parent_run_id=parent_run_id, experiment_id=f.experiment_id
            )
            ACTIVE_RUNS.add(f.run_id)  # its process is alive, or ended it in its journal
        pending = [e for e in f.entries if e["seq"] > f.acked]
        if pending:
            replay.send(self.store, f.run_id, pending, f.path.parent)
            f.acked = pending[-1]["seq"]
        if f.end is not None:  # its writer is done: the journal records where it went
            self.record_where_it_went(f)

    def record_where_it_went(self, f: Followed) -> None:
        """Write the run id and the store's ack into an ended journal (its writer is done),
        also after an outage: ``numgrad-sync`` then goes on in that run, not a second one."""
        journal, _ = Journal.reopen(f.path)
        journal.append("run", uri=self.uri, run_id=f.run_id)
        journal.append("ack", uri=self.uri, seq_acked=f.acked)
        journal.close()
        f.closed = True

    def give_up(self) -> None:
        """The sweep is over: every ended journal the store holds part of says so."""
        for f in [*self.children.values(), self.parent]:
            if not f.closed and f.run_id is not None and f.end is not None:
                self.record_where_it_went(f)

    def end_the_dead(self, *, sweep_gone: bool = False) -> None:
        """Journals whose process died without an end (SIGKILL) end KILLED; with
        ``sweep_gone``, the sweep's own and those of jobs that ran in its process."""
        if self.parent.path.exists():
            self.parent.read_new()
        parent_tags = (self.parent.start or {}).get("tags") or {}
        sweep_pid = parent_tags.get("numgrad.pid") if sweep_gone else None
        for path in sorted(self.sweep_dir.glob(f"*/{JOURNAL_FILE}")):
            f = self.children.setdefault(path, Followed(path))
            f.read_new()
            tags = (f.start or {}).get("tags") or {}
            if (
                f.start
                and f.end is None
                and (
                    process_gone(tags, f.start["start_time"])
                    or tags.get("numgrad.pid") == sweep_pid
                )
            ):
                _end_killed(f)
        if sweep_gone and self.parent.start and self.parent.end is None:
            _end_killed(self.parent)

    def remote_children(self) -> list[dict[str, Any]]:
        """The parent's children that no journal here holds: jobs that ran elsewhere."""
        if self.store is None or self.parent.run_id is None:
            return []
        known = {f.run_id for f in self.children.values()}
        found = self.store.call(self.store.client.search_experiments, max_results=1000)
        runs = self.store.search_runs(
            [e.experiment_id for e in found], f"tags.mlflow.parentRunId = '{self.parent.run_id}'"
        )
        return [_run_row(r) for r in runs if r.info.run_id not in known]

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
            "parent": self.parent.state(self.uri), "remote": remote,
            "children": {
                str(p): f.state(self.uri) for p, f in self.children.items() if not f.foreign
            },
        }  # fmt: skip


def _end_killed(f: Followed) -> None:
    journal, _ = Journal.reopen(f.path)
    journal.end_killed(f.entries)
    journal.close()
    f.read_new()  # the end is now part of what is sent


def _run_row(run: Any) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
        "output_dir": tags.get("numgrad.output_dir"),
        "overrides": tags.get("numgrad.overrides", ""),
        "error": tags.get("numgrad.error", ""), "metrics": dict(run.data.metrics),
        "params": dict(run.data.params), "synced": True,
    }  # fmt: skip


def serve(sweep_dir: Path, uri: str, grace: float, parent_pid: int) -> int:
    """The sender process's loop: follow, send, answer ``drain`` and ``finish``."""
    sender, told = Sender(sweep_dir, uri), False
    while True:
        ready = select.select([sys.stdin], [], [], POLL_SECONDS)[0]
        command = sys.stdin.readline().strip() if ready else ""
        try:
            sender.send_all()
        except Exception:
            pass  # the store refused a record: sender.error says which
        if not told and (sender.parent.run_id is not None or sender.error is not None):
            told = True
            if sender.error is not None:
                _say({"event": "error", "error": sender.error})
            else:
                _say({"event": "parent", "run_id": sender.parent.run_id})
        # stdin at its end: the sweep died (it says "finish" otherwise); a zombie is gone too.
        gone = (ready and not command) or not _alive(parent_pid)
        if command == "drain" or gone:
            sender.end_the_dead(sweep_gone=gone)
            _until_sent(sender, grace, parent=False)
            _say(sender.state())
        if command == "finish" or gone:
            _until_sent(sender, grace, parent=True)
            sender.give_up()
            _say(sender.state())
            return 0


def _until_sent(sender: Sender, grace: float, *, parent: bool) -> None:
    deadline = time.monotonic() + grace
    sender.retry_at, sender.backoff = 0.0, 1.0  # the store may be back any moment
    while sender.error is None:
        try:
            if sender.send_all(parent=parent) and _all_sent(sender, parent):
                return
        except Exception:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(min(1.0, max(0.0, sender.retry_at - time.monotonic())) or 0.05)


def _all_sent(sender: Sender, parent: bool) -> bool:
    followed = [*sender.children.values(), *([sender.parent] if parent else [])]
    return all(f.closed or (f.entries and f.acked >= f.entries[-1]["seq"]) for f in followed)


def _alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie (killed, not yet reaped) is not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # alive, another user's
        return True


_protocol = sys.stdout  # main() keeps the real stdout for the protocol alone


def _say(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # a sweep killed outright no longer listens
        _protocol.write(json.dumps(message) + "\n")
        _protocol.flush()


def main() -> None:
    p = argparse.ArgumentParser(description="A sweep's sender (started by the sweep itself).")
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("uri")
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--parent-pid", type=int, default=os.getppid())
    args = p.parse_args()
    # The protocol gets stdout to itself; whatever a library prints goes to stderr.
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.exit(serve(args.sweep_dir, args.uri, args.grace, args.parent_pid))


if __name__ == "__main__":
    main()
