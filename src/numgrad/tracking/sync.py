"""``numgrad-sync [PATH ...]``: upload run journals that their tracking store lacks.

Each journal goes into the run it belongs to: the same run where the store has it,
else a new run with the journal's start time, name, params and tags (a sweep's
children under their parent's run). What the store has not acknowledged is sent,
then the final status; a run whose process died without one (SIGKILL, a power cut)
ends KILLED. Sending is idempotent, so a second sync changes nothing.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numgrad import command, signals
from numgrad.tracking import replay
from numgrad.tracking.journal import JOURNAL_FILE, Journal, JournalError, JournalView, read_journal
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import process_gone
from numgrad.tracking.records import describe_error
from numgrad.tracking.uri import TrackingError, check_uri

DEFAULT_ROOT = Path("outputs")


@dataclass
class Result:
    """What happened to one journal."""

    path: Path
    state: str  # "uploaded", "complete", "skipped"
    line: str


def find_journals(paths: Sequence[Path]) -> list[Path]:
    """Journals at or under ``paths`` (files, run dirs, sweep dirs, whole trees)."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for journal in sorted(path.rglob(JOURNAL_FILE)):
                found[journal.resolve()] = None
    return list(found)


def sync(paths: Sequence[Path], uri: str | None = None) -> list[Result]:
    """Upload every journal under ``paths`` into its store (or ``uri``); one result each."""
    views: list[tuple[Path, JournalView | JournalError]] = []
    for path in find_journals(paths):
        try:
            views.append((path, read_journal(path)))
        except JournalError as exc:
            views.append((path, exc))
    # Parents first: a child's run is created under its parent's.
    views.sort(key=lambda pv: isinstance(pv[1], JournalView) and pv[1].start.get("type") != "sweep")
    stores: dict[str, MlflowStore] = {}
    return [_sync_one(path, view, uri, stores) for path, view in views]


def _sync_one(
    path: Path, view: JournalView | JournalError, uri: str | None, stores: dict[str, MlflowStore]
) -> Result:
    where = _short(path.parent)
    if isinstance(view, JournalError):
        return Result(path, "skipped", f"{path}: skipped, unreadable: {view}")
    try:
        target = check_uri(uri or view.start["uri"])
        if view.synced(target):
            return Result(path, "complete", f"{where}: already complete in run {view.runs[target]}")
        if view.end is None and _still_running(view):
            pid = view.start["tags"].get("numgrad.pid")
            return Result(path, "skipped", f"{where}: skipped, its run is still going (pid {pid})")
        store = stores.get(target) or stores.setdefault(target, MlflowStore(target).open())
        return _upload(path, view, target, store, where)
    except (TrackingError, JournalError) as exc:
        return Result(path, "skipped", f"{where}: skipped: {exc}")
    except Exception as exc:
        return Result(path, "skipped", f"{where}: skipped: {describe_error(exc)}")


def _upload(path: Path, view: JournalView, uri: str, store: MlflowStore, where: str) -> Result:
    journal, torn = Journal.reopen(path)
    try:
        run_id = view.runs.get(uri)
        entries = view.pending(uri)
        if run_id is None or store.get_run(run_id) is None:
            run_id = replay.open_run(store, _start(view, uri), parent_run_id=_parent(view, uri))
            journal.append("run", uri=uri, run_id=run_id)
            entries = view.entries
        if view.end is None:  # its process died without a status: it was killed
            entries = [*entries, *journal.end_killed(view.entries)]
        sent = replay.send(store, run_id, entries, path.parent)
        with signals.held():
            journal.append("ack", uri=uri, seq_acked=max(e["seq"] for e in entries))
    finally:
        journal.close()
    values = sent.metrics + sent.params + sent.tags
    status = sent.status or (view.end or {}).get("status", "?")
    note = f" (skipped {torn})" if torn else ""
    extra = "".join(f", {_count(n, what)}" for n, what in ((sent.inputs, "dataset input"),
                                                          (sent.models, "model")) if n)  # fmt: skip
    return Result(
        path, "uploaded",
        f"{where}: uploaded {values} values ({sent.metrics} metric values), "
        f"{_count(sent.artifacts, 'artifact')}{extra} to run {run_id} "
        f"({view.start['run_name']}); {status}{note}",
    )  # fmt: skip


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _start(view: JournalView, uri: str) -> dict[str, Any]:
    """The start record, without a parent id that belongs to another store."""
    start = dict(view.start)
    if uri != start["uri"]:
        start["tags"] = {k: v for k, v in start["tags"].items() if k != replay.PARENT_TAG}
    return start


def _parent(view: JournalView, uri: str) -> str | None:
    """The parent's run id in this store, from the parent's journal (an offline sweep)."""
    relative = view.start.get("parent_journal")
    if not relative:
        return None
    try:
        parent = read_journal((view.path.parent / relative).resolve())
    except JournalError:
        return None
    return parent.runs.get(uri)


def _still_running(view: JournalView) -> bool:
    """True when the journal's process is alive on this host (never sync a live run)."""
    tags = view.start.get("tags") or {}
    same_host = tags.get("numgrad.host") == socket.gethostname()
    pid = tags.get("numgrad.pid", "")
    return same_host and pid.isdigit() and not process_gone(tags, view.start["start_time"])


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exit 0 when every journal is in its store, 1 when one was skipped."""
    command.run_command("numgrad-sync", lambda: _command(argv))


def _command(argv: Sequence[str] | None) -> int:
    p = argparse.ArgumentParser(prog="numgrad-sync", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="run dirs, sweep dirs or journals (default: everything under ./outputs)",
    )
    p.add_argument("--uri", help="upload into this store instead of the one each journal names")
    args = p.parse_args(argv)
    for path in args.paths:  # a typo is not "nothing to sync"
        why = "no such file or directory" if not path.exists() else None
        if why is None and not find_journals([path]):
            why = f"no run journal ({JOURNAL_FILE}) at or under it"
        if why is not None:
            raise command.UsageError(f"{path}: {why}")
    results = sync(args.paths or [DEFAULT_ROOT], args.uri)
    for result in results:
        if args.paths or result.state != "complete":
            stream = sys.stderr if result.state == "skipped" else sys.stdout
            print(f"numgrad-sync: {result.line}", file=stream)
    counts = {s: sum(r.state == s for r in results) for s in ("uploaded", "complete", "skipped")}
    print(f"numgrad-sync: {_count(len(results), 'journal')}: {counts['uploaded']} uploaded, "
          f"{counts['complete']} already complete, {counts['skipped']} skipped")  # fmt: skip
    return command.FAILED if counts["skipped"] else 0


if __name__ == "__main__":
    main()
