"""A sweep's sender process, watched: started, restarted when it dies, asked for its state.

The sender (:mod:`numgrad.tracking.sender`) is the only process that uploads a local
sweep; the jobs only journal. Should it die (SIGKILL, the OOM killer), nothing would
reach the store: the parent and its children would stay RUNNING, half sent. So a
thread of the sweep looks at it every :data:`WATCH_SECONDS` and starts another in its
place, and a question the sweep asks it is asked again of its successor.

A successor goes on where the dead one stopped, because everything it needs is on
disk: each journal names its run by a key (``numgrad.journal_key``), so the same
parent and the same children are found again, never made twice, and the store
ignores a metric value it already holds. The journals' locks (``<journal>.lock``)
died with the dead sender, so nobody else is sending them meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WATCH_SECONDS = 0.5  # how soon a dead sender is noticed
MAX_STARTS = 6  # a sender that dies this often has a cause a restart cannot cure
ASKS = 3  # how many senders a question is asked of before the sweep gives up on it


class WatchedSender:
    """The sender of the sweep in ``sweep_dir`` for store ``uri`` (see the module's docstring)."""

    def __init__(self, sweep_dir: Path, uri: str, grace: float, *, uploaders: int | None = None):
        self.args = [
            sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep_dir), uri,
            "--grace", str(grace), "--parent-pid", str(os.getpid()),
            *(["--uploaders", str(uploaders)] if uploaders is not None else []),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""  # what the sender said past its last whole line
        self.starts = 0
        self.deaths: list[str] = []  # how each sender that died ended
        self._lock = threading.RLock()  # one of the watch and a question at a time
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        """Start the sender and the thread that watches it."""
        self._start()
        self._watch = threading.Thread(target=self._watching, name="sender-watch", daemon=True)
        self._watch.start()

    def hear(self, event: str, timeout: float) -> dict[str, Any]:
        """The sender's next line of kind ``event`` (or an error) within ``timeout``;
        asked again of a successor if it dies meanwhile; {} when none answers."""
        deadline = time.monotonic() + timeout
        for _ in range(ASKS):
            with self._lock:
                if not self._alive():
                    return {}
                said = self._hear(event, deadline, errors=True)
            if said or time.monotonic() >= deadline:
                return said
        return {}

    def ask(self, command: str, timeout: float) -> dict[str, Any]:
        """Send ``command``; its answer (a ``state`` line), from a successor if the
        sender dies before it answers; {} when none does. After ``finish`` the sender
        exits by design: it is no longer watched."""
        with self._lock:
            for _ in range(ASKS):
                if not self._alive():
                    return {}
                with contextlib.suppress(OSError):  # a dead sender: its successor is asked
                    self.proc.stdin.write(command.encode() + b"\n")
                    self.proc.stdin.flush()
                said = self._hear("state", time.monotonic() + timeout, errors=False)
                if said:
                    if command == "finish":
                        self._stop.set()
                    return said
        return {}

    def stop(self) -> None:
        """Stop watching, then end the sender (and anything it started)."""
        self._stop.set()
        with self._lock:
            proc, self.proc = self.proc, None
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(timeout=5)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=10)

    # ------------------------------------------------------------------ inside

    def _start(self) -> None:
        self.starts += 1
        self._buffer = b""
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            start_new_session=True,  # a Ctrl-C is the sweep's to handle, not the sender's
        )  # fmt: skip

    def _alive(self) -> bool:
        """True when a sender runs, after starting a successor to a dead one if allowed."""
        if self.proc is None:
            return False
        code = self.proc.poll()
        if code is None:
            return True
        old = self.proc.pid
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=1)  # reap it, close its pipes
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        self.deaths.append(f"pid {old}, {how}")
        if self._stop.is_set() or self.starts >= MAX_STARTS:
            self.proc = None
            print(f"numgrad: the sweep's sender (pid {old}) died ({how}); not restarted: "
                  f"{len(self.deaths)} senders died", file=sys.stderr)  # fmt: skip
            return False
        self._start()
        print(f"numgrad: the sweep's sender (pid {old}) died ({how}); started another "
              f"(pid {self.proc.pid}), which goes on from the journals",
              file=sys.stderr)  # fmt: skip
        return True

    def _watching(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            with self._lock:
                if self._stop.is_set() or not self._alive():
                    return

    def _hear(self, event: str, deadline: float, *, errors: bool) -> dict[str, Any]:
        """The sender's next line of kind ``event`` (or ``error`` with ``errors``) before
        ``deadline``; {} when it dies or stays silent."""
        wanted = (event, "error") if errors else (event,)
        while (line := self._line(deadline)) is not None:
            try:
                said = json.loads(line)
            except ValueError:
                print(line, file=sys.stderr)  # not the protocol's: pass it on
                continue
            if isinstance(said, dict) and said.get("event") in wanted:
                return said
        return {}

    def _line(self, deadline: float) -> str | None:
        """The sender's next whole line; None at its death or at ``deadline``.

        Read unbuffered, so that a second line that came with the first is never left
        in a buffer that ``select`` cannot see.
        """
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            if time.monotonic() >= deadline:
                return None
            if select.select([fd], [], [], 0.25)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:  # its end of the pipe closed: it died, or is dying
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=5)  # so that _alive() sees it dead
                    return None
                self._buffer += chunk
            elif self.proc.poll() is not None:
                return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")
