"""The sweep's sender process: its loop, and its protocol with the sweep over stdin/stdout.

:class:`~numgrad.tracking.sender.Sender` does the sending; this process runs it beside
a local sweep (started and watched by :mod:`numgrad.sweep.watched_sender`).
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
import os
import select
import sys
import time
from pathlib import Path

from numgrad.processes import alive
from numgrad.reports import Reports, take_stdout
from numgrad.sweep.workers import tell_workers
from numgrad.tracking.sender import Sender
from numgrad.tracking.upload_pool import default_uploaders

POLL_SECONDS = 0.25  # how often idle journals are read: the UI's live curves lag this much
WORKERS_SECONDS = 10.0  # a dead sweep's live workers get this long to end their runs


def serve(sweep_dir: Path, uri: str, grace: float, parent_pid: int, uploaders: int = 1) -> int:
    """The sender process's loop: follow, send, answer ``drain`` and ``finish``."""
    sender, told = Sender(sweep_dir, uri, uploaders=uploaders), False
    while True:
        # After a pass that sent something, at once: a job may have ended meanwhile.
        ready = select.select([sys.stdin], [], [], 0 if sender.busy else POLL_SECONDS)[0]
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
        gone = (ready and not command) or not alive(parent_pid)
        if command == "drain" or gone:
            sender.end_the_dead(sweep_gone=gone)
            if gone:  # its pool workers die with it (sweep/workers.py): wait for their ends
                tell_workers(parent_pid)
                _until_ended(sender, WORKERS_SECONDS)
            _until_sent(sender, grace, parent=False)
            _say(sender.state())
        if command == "finish" or gone:
            _until_sent(sender, grace, parent=True)
            sender.give_up()
            _say(sender.state())
            sender.close()
            return 0


def _until_ended(sender: Sender, timeout: float) -> None:
    """Wait at most ``timeout`` s until every child journal has an end; a writer that
    dies meanwhile without one gets its end from :meth:`Sender.end_the_dead`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.end_the_dead(sweep_gone=True)
        if all(t.reader.end is not None for t in sender.followed()):
            return
        time.sleep(0.2)


def _until_sent(sender: Sender, grace: float, *, parent: bool) -> None:
    deadline = time.monotonic() + grace
    sender.hurry()  # the store may be back any moment
    while sender.error is None:
        try:
            if sender.send_all(parent=parent) and _all_sent(sender, parent):
                return
        except Exception:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(min(1.0, max(0.0, sender.backoff.retry_at - time.monotonic())) or 0.05)


def _all_sent(sender: Sender, parent: bool) -> bool:
    followed = [*sender.children.values(), *([sender.parent] if parent else [])]
    return all(t.closed or t.foreign or t.done for t in followed if t.reader.entries)


_reports = Reports()  # main() keeps the real stdout for the protocol alone
_say = _reports.say


def main() -> None:
    p = argparse.ArgumentParser(description="A sweep's sender (started by the sweep itself).")
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("uri")
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--parent-pid", type=int, default=os.getppid())
    p.add_argument("--uploaders", type=int, default=default_uploaders(),
                   help="processes uploading child journals, this one included")  # fmt: skip
    args = p.parse_args()
    take_stdout(_reports)  # whatever a library prints goes to stderr
    if args.uploaders < 1:
        print(f"numgrad: --uploaders must be at least 1, not {args.uploaders}", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(args.sweep_dir, args.uri, args.grace, args.parent_pid, args.uploaders))


if __name__ == "__main__":
    main()
