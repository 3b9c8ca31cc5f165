"""``numgrad-sync [PATH ...]``: upload run journals that their tracking store lacks.

Each journal goes into the run it belongs to: the same run where the store has it,
else a new run with the journal's start time, name, params and tags (a sweep's
children under their parent's run: a child synced alone brings its parent along).
A journal is untrusted input: each of its records is checked, and every file it names
must lie inside its own folder, before its run is created or touched; a journal that
fails is named, with its line and why, and skipped whole while the others go on.

Its upload holds the journal's lock, so two syncs (or a sync and a sweep's sender)
never send one journal twice; the lock also tells a live run, which holds it for its
life. A journal with no end whose process is gone (SIGKILL, a power cut) ends KILLED,
decided under the lock on a fresh read. What the store has is acknowledged batch by
batch, so an interrupted sync resumes where it stopped; a second sync changes nothing.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from numgrad import command
from numgrad.processes import writer_gone
from numgrad.tracking.entries import PathError
from numgrad.tracking.journal import (
    JOURNAL_FILE,
    Journal,
    JournalError,
    JournalReader,
    read_journal,
)
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.records import describe_error
from numgrad.tracking.uploader import JournalBusy, Uploader, end_if_writer_gone, journal_lock
from numgrad.tracking.uri import TrackingError, check_uri

DEFAULT_ROOT = Path("outputs")
ADVICE = "start it, or name another store with numgrad-sync --uri"


@dataclass
class Result:
    """What happened to one journal: ``uploaded``, ``complete``, ``later`` (a live run,
    or another process has it: a note) or ``skipped`` (an error)."""

    path: Path
    state: str
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


class Syncer:
    """One numgrad-sync pass: the stores it opened, the journals it has done."""

    def __init__(
        self, uri: str | None = None, report: Callable[[Result], None] | None = None
    ) -> None:
        self.uri, self.report = uri, report
        self.stores: dict[str, MlflowStore] = {}
        self.results: dict[Path, Result] = {}

    def sync(self, paths: Sequence[Path]) -> list[Result]:
        # A sweep's parent journal lies above its children's: shallower paths first.
        for path in sorted(find_journals(paths), key=lambda p: (len(p.parts), p)):
            self.sync_one(path)
        return list(self.results.values())

    def sync_one(self, path: Path) -> Result:
        if path not in self.results:
            self.results[path] = result = self._sync_one(path)
            if self.report is not None:
                self.report(result)
        return self.results[path]

    def _sync_one(self, path: Path) -> Result:
        where = _short(path.parent)
        try:
            lock = journal_lock(path)
        except JournalBusy:
            return Result(path, "later", f"{where}: left for later: {_holder(path)}")
        try:
            try:
                reader = read_journal(path)  # fresh, under the lock
            except JournalError as exc:
                return Result(path, "skipped", f"{path}: skipped, unreadable: {exc}")
            target = check_uri(self.uri or reader.start["uri"], advice=ADVICE)
            if reader.synced(target):
                run_id = reader.runs[target]
                return Result(path, "complete", f"{where}: already complete in run {run_id}")
            tags = reader.start.get("tags") or {}
            elsewhere = tags.get("numgrad.host") != socket.gethostname()  # no evidence to wait for
            dead = tags.get("numgrad.pid") if elsewhere else None
            if reader.end is None and not end_if_writer_gone(reader, dead_pid=dead):
                pid = tags.get("numgrad.pid")
                return Result(path, "later", f"{where}: left for later: its run is still going "
                              f"(pid {pid})")  # fmt: skip
            return self._upload(path, reader, target, where)
        except (TrackingError, JournalError, PathError) as exc:
            return Result(path, "skipped", f"{where}: skipped: {exc}")
        except Exception as exc:
            return Result(path, "skipped", f"{where}: stopped part-way: {describe_error(exc)}; "
                          "the journal records how far it got: sync it again to go on")  # fmt: skip
        finally:
            lock.release()

    def _upload(self, path: Path, reader: JournalReader, target: str, where: str) -> Result:
        store = self.stores.get(target) or self.stores.setdefault(
            target, MlflowStore(target).open()
        )
        parent = self._parent(reader, target)
        torn = reader.torn  # a torn last line is cut off when the journal is reopened
        journal, _ = Journal.reopen(path)
        try:
            uploader = Uploader(store, reader, journal=journal, parent_run_id=parent)
            sent = uploader.upload()
        finally:
            journal.close()
        status = sent.status or reader.end["status"]
        note = f" (skipped {torn})" if torn else ""
        counted = ((sent.inputs, "dataset input"), (sent.models, "model"))
        extra = "".join(f", {_count(n, what)}" for n, what in counted if n)
        return Result(
            path, "uploaded",
            f"{where}: uploaded {sent.values} values ({sent.metrics} metric values), "
            f"{_count(sent.artifacts, 'artifact')}{extra} to run {uploader.run_id} "
            f"({reader.start['run_name']}) in {target}; {status}{note}",
        )  # fmt: skip

    def _parent(self, reader: JournalReader, uri: str) -> str | None:
        """The parent's run id in this store; a child synced first brings its parent along."""
        relative = reader.start.get("parent_journal")
        if not relative:
            return None
        path = (reader.path.parent / relative).resolve()
        if path.is_file() and path.parent == reader.path.parent.parent:
            parent = read_journal(path)
            if uri not in parent.runs:
                done = self.sync_one(path)
                if done.state not in ("uploaded", "complete"):
                    raise JournalError(
                        f"its sweep's parent journal could not be synced first ({done.line}); "
                        f"sync the sweep dir {path.parent} once the sweep has ended"
                    )
                parent = read_journal(path)
            return parent.runs.get(uri)
        return None


def _holder(path: Path) -> str:
    """Who holds a journal's lock, as far as its start record tells."""
    try:
        reader = JournalReader(path).read_new()
        start = reader.start if reader.entries else {}
    except JournalError:
        start = {}
    tags = start.get("tags") or {}
    pid = tags.get("numgrad.pid")
    # A dead writer's journal is held by another uploader, not by its run.
    if pid and not start.get("handed_over") and not writer_gone(tags, start.get("start_time")):
        return f"its run is still going (pid {pid})"
    if start.get("handed_over"):
        return "its sweep's sender is sending it"
    return "another numgrad-sync is uploading it"


def sync(paths: Sequence[Path], uri: str | None = None) -> list[Result]:
    """Upload every journal under ``paths`` into its store (or ``uri``); one result each."""
    return Syncer(uri).sync(paths)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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

    def report(result: Result) -> None:  # each journal's line as it is done
        if args.paths or result.state != "complete":
            stream = sys.stderr if result.state == "skipped" else sys.stdout
            print(f"numgrad-sync: {result.line}", file=stream, flush=True)

    results = Syncer(args.uri, report).sync(args.paths or [DEFAULT_ROOT])
    counts = {s: sum(r.state == s for r in results)
              for s in ("uploaded", "complete", "later", "skipped")}  # fmt: skip
    later = f", {counts['later']} left for later" if counts["later"] else ""
    print(f"numgrad-sync: {_count(len(results), 'journal')}: {counts['uploaded']} uploaded, "
          f"{counts['complete']} already complete{later}, {counts['skipped']} skipped")  # fmt: skip
    return command.FAILED if counts["skipped"] else 0


if __name__ == "__main__":
    main()
