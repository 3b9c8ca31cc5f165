"""An upload process of a sweep's sender: sends the child journals the sender gives it.

Started by :class:`~numgrad.tracking.upload_pool.UploadPool` as ``python -m
numgrad.tracking.upload_worker SWEEP_DIR URI --slot N`` (``--search`` when it replaces
one that died). It is a :class:`~numgrad.tracking.sender.Sender` whose children are
the journals it was given and whose parent run it is told: each journal it takes the
lock of, uploads, and closes exactly as the sender does, in its own store connection.
Its protocol (stdin and stdout, one JSON object a line) is the pool's module docstring.
It stops when its stdin closes: the sender ended it, or died.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import sys
from pathlib import Path
from typing import Any

from numgrad.reports import Reports, take_stdout
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.sender import Sender, Tracked

POLL_SECONDS = 0.25  # how often idle journals are read, as the sender does


class Share(Sender):
    """The journals one upload process was given (see the module's docstring).

    ``search``: the runs of its journals may exist already (it replaces one that died),
    so each is searched for by its key even under a parent run the sender made.
    """

    owns_parent = False  # the sender's: never ended here

    def __init__(self, sweep_dir: Path, uri: str, slot: int, *, search: bool) -> None:
        super().__init__(sweep_dir, uri)
        self.slot, self.search = slot, search
        self.given: list[Path] = []
        self.parent_link: tuple[str, bool] | None = None
        self._said: dict[Path, dict[str, Any]] = {}

    def _link(self) -> tuple[str, bool] | None:
        if self.parent_link is None:
            return None
        run_id, made_here = self.parent_link
        return run_id, made_here and not self.search

    def _children(self) -> list[Tracked]:
        return [self.children.setdefault(path, Tracked(path)) for path in self.given]

    def _send(self, t: Tracked, parent_run_id: str | None) -> None:
        try:
            super()._send(t, parent_run_id)
        finally:  # also after an outage: how far the store got is worth knowing
            self.report(t)

    def report(self, t: Tracked) -> None:
        """Tell the sender where ``t`` stands, if that changed since last told."""
        up = t.uploader
        if up is None:
            return
        read = t.reader.entries[-1]["seq"] if t.reader.entries else 0
        now = {"run_id": up.run_id, "experiment_id": up.experiment_id, "acked": up.acked,
               "done": up.done, "seq": read, "recorded": up.recorded}  # fmt: skip
        if self._said.get(t.path) != now:
            self._said[t.path] = now
            say({"event": "journal", "path": str(t.path), **now})

    def do(self, message: dict[str, Any]) -> None:
        """Carry out one of the sender's requests."""
        what = message.get("do")
        if what == "link":
            self.parent_link = (message["run_id"], bool(message["made"]))
        elif what == "take":
            self.given.append(Path(message["path"]))
        elif what == "hurry":
            self.backoff.succeeded()
        elif what in ("end_the_dead", "give_up"):
            with contextlib.suppress(Exception):  # a store that fails: the sender sees it
                if what == "give_up":
                    self.give_up()
                else:
                    self.end_the_dead(sweep_gone=bool(message.get("sweep_gone")))
            for t in self._children():
                self.report(t)
            say({"event": "done", "do": what})


def serve(sweep_dir: Path, uri: str, slot: int, search: bool) -> int:
    """The upload process's loop: take requests, send what is new, report."""
    share, buffer, told = Share(sweep_dir, uri, slot, search=search), b"", False
    with contextlib.suppress(Exception):  # opened now, not at its first journal
        share.store = MlflowStore(uri).open()
    say({"event": "ready"})
    while True:
        if select.select([0], [], [], 0 if share.busy else POLL_SECONDS)[0]:
            chunk = os.read(0, 1 << 16)
            if not chunk:  # the sender is done with it, or gone
                return 0
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                share.do(json.loads(line))
        with contextlib.suppress(Exception):  # a refused record: share.error says which
            share.send_all(parent=False)
        if share.error is not None and not told:
            told = True
            say({"event": "error", "error": share.error})


_reports = Reports()  # main() keeps the real stdout for the protocol alone
say = _reports.say


def main() -> None:
    p = argparse.ArgumentParser(description="An upload process of a sweep's sender.")
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("uri")
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--search", action="store_true")
    args = p.parse_args()
    take_stdout(_reports)  # whatever a library prints goes to stderr
    sys.exit(serve(args.sweep_dir, args.uri, args.slot, args.search))


if __name__ == "__main__":
    main()
