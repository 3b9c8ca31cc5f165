"""A sweep's sender's upload processes: child journals given out, their progress heard back.

One Python process uploads about a dozen short runs a second, nearly all of it MLflow's
ORM holding the GIL; more cores help only as more processes. So a sender with ``K``
uploaders sends some children itself and gives the others to up to ``K - 1`` upload
processes (:mod:`numgrad.tracking.upload_worker`), a journal to whichever has the
fewest unfinished ones. An upload process starts only once the sender and those
started are each :data:`BACKLOG` ended journals behind: a sweep whose sender keeps up
pays for no second mlflow import. A journal, once given, stays with its process: its
uploader's state (run id, how far the store holds it, the runs made) lives in one
place only.

Each upload process is a fresh interpreter (``python -m``): no SQLAlchemy engine is
inherited across a fork. It gets SIGKILL when the sender dies, also when the sender
is SIGKILLed (``PR_SET_PDEATHSIG``), and the kernel then releases its journals' locks.
One that dies while the sender lives is started again and given the same journals;
it finds their runs by their journal keys, as a successor sender does, and makes no
run of its own for a key without searching first.

They talk over pipes, one JSON object a line: to it ``{"do": "link" | "take" |
"end_the_dead" | "hurry" | "give_up", ...}``; from it ``{"event": "journal", "path":
..., "run_id", "experiment_id", "acked", "done", "seq", "recorded"}`` whenever a
journal moved (``done``: the store holds every record up to ``seq``, the last it read),
``{"event": "error"}``, and ``{"event": "done", "do": ...}`` after a request.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from numgrad.processes import ending_with_this_process
from numgrad.tracking.uri import share_writes, sqlite_path

MAX_STARTS = 6  # an upload process that dies this often has a cause a restart cannot cure
BACKLOG = 3  # ended journals given to one process and waiting: the rest wait to be given
REQUEST_SECONDS = 60.0  # how long a request (end the dead, give up) is waited for


def default_uploaders(cores: int | None = None) -> int:
    """How many processes upload a sweep's journals when nothing says: one per 4 cores,
    1 to 4 (the sender reads every journal itself, and SQLite writes one at a time).

    A sweep's jobs take the cores; an upload process is worth its start (importing
    mlflow: ~1.4 s of a core) only where cores are left over. On 2 cores a second one
    made the 16-job sweep of bench_sweep.py slower (1.87x untracked against 1.57x).

    >>> [default_uploaders(n) for n in (1, 2, 4, 8, 16, 64)]
    [1, 1, 1, 2, 4, 4]
    """
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(cores // 4, 4))


class _Slot:
    """One upload process: its pipes, what it was given, what it said past its last line."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.proc: subprocess.Popen[bytes] | None = None
        self.given: list[str] = []
        self.buffer = b""
        self.starts = 0


class UploadPool:
    """The upload processes of the sender of ``sweep_dir`` (see the module's docstring).

    ``count`` is the number of processes besides the sender itself (``K - 1``).
    """

    def __init__(self, sweep_dir: Path, uri: str, count: int) -> None:
        self.sweep_dir, self.uri = sweep_dir, uri
        self.slots = [_Slot(n + 1) for n in range(count)]
        self.link: dict[str, Any] | None = None
        self.error: str | None = None
        self.db, self.shared = sqlite_path(uri), False  # shared: ready for several writers

    def linked(self, run_id: str, made_here: bool) -> None:
        """The parent run exists: the upload processes may send its children."""
        if self.link is None:
            self.link = {"do": "link", "run_id": run_id, "made": made_here}
            for slot in self.slots:
                self._tell(slot, self.link)

    def give(self, path: Path, load: list[list[int]], *, ended: bool) -> int | None:
        """Give the journal ``path`` to the sender (0) or an upload process (n); which one,
        or None: not yet. ``load[n]`` is how many journals n has unfinished: [ended, all].

        A journal still being written goes at once (its live curves), to the one with the
        fewest; an ended one only to one with fewer than :data:`BACKLOG` ended journals
        waiting, so that a backlog goes to whichever is free first, and when none is,
        to an upload process started for it.
        """
        free = [n for n in range(len(load)) if n == 0 or self.slots[n - 1].proc is not None]
        if ended:
            free = [n for n in free if load[n][0] < BACKLOG]
            idle = [slot for slot in self.slots if not slot.starts]
            if not free and idle and self._share():
                self._start(idle[0])
                free = [idle[0].number]
        if not free:
            return None
        best = min(free, key=lambda n: (load[n], n))
        if best:
            slot = self.slots[best - 1]
            slot.given.append(str(path))
            self._tell(slot, {"do": "take", "path": str(path)})
        return best

    def hear(self, children: dict[Path, Any], wait: float = 0.0) -> bool:
        """Take in what the upload processes said (waiting at most ``wait`` s for the
        first word); True when a journal moved. Dead ones are started again."""
        moved = False
        for said in self._lines(wait):
            moved |= self._note(said, children)
        self._restart_the_dead()
        return moved

    def request(self, do: str, children: dict[Path, Any], **fields: Any) -> None:
        """Have every upload process do ``do`` (``end_the_dead``, ``give_up``) and wait
        until each has (or has died)."""
        waiting = set()
        for slot in self.slots:
            if self._tell(slot, {"do": do, **fields}):
                waiting.add(slot.number)
        deadline = time.monotonic() + REQUEST_SECONDS
        while waiting and time.monotonic() < deadline:
            for said in self._lines(0.25):
                self._note(said, children)
                if said.get("event") == "done" and said.get("do") == do:
                    waiting.discard(said["slot"])
            waiting = self._alive(waiting)

    def started(self, timeout: float = 60.0) -> None:
        """Start every upload process now and wait until each has its store open (a
        benchmark of the uploads themselves; a test of one that holds a live journal)."""
        for slot in self.slots:
            if not slot.starts and self._share():
                self._start(slot)
        waiting, deadline = {s.number for s in self.slots}, time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting -= {s["slot"] for s in self._lines(0.25) if s.get("event") == "ready"}
            # One that died before it was ready will never say so (its pipe reads empty
            # at once: waiting on it would spin until the deadline).
            waiting = self._alive(waiting)

    def _share(self) -> bool:
        """Make the store ready for writers side by side (a SQLite file: WAL mode), before
        the first upload process starts; where it cannot be, the sender uploads alone
        (two would only slow each other). True when upload processes may start."""
        if self.shared or self.db is None:
            return bool(self.slots)
        self.shared, why = True, "not in WAL mode"
        try:
            if share_writes(self.db):
                return True
        except Exception as exc:  # a network file system, a store held by another
            why = f"{type(exc).__name__}: {exc}"
        print(f"numgrad: the sweep's sender uploads alone: {self.db} cannot take writers "
              f"side by side ({why})", file=sys.stderr)  # fmt: skip
        self.slots = []
        return False

    def hurry(self) -> None:
        """The store may be back any moment: every upload process tries again now."""
        for slot in self.slots:
            self._tell(slot, {"do": "hurry"})

    def close(self) -> None:
        """End the upload processes (their stdin closes: they stop between journals)."""
        for slot in self.slots:
            proc, slot.proc = slot.proc, None
            if proc is None:
                continue
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()

    # ------------------------------------------------------------------ inside

    def _start(self, slot: _Slot) -> None:
        slot.starts += 1
        slot.buffer = b""
        argv = [sys.executable, "-m", "numgrad.tracking.upload_worker",
                str(self.sweep_dir), self.uri, "--slot", str(slot.number)]  # fmt: skip
        if slot.starts > 1:  # its runs may exist: found by their keys, never made again
            argv.append("--search")
        slot.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            preexec_fn=ending_with_this_process(signal.SIGKILL),
        )  # fmt: skip
        if self.link is not None:
            self._tell(slot, self.link)
        for path in slot.given:
            self._tell(slot, {"do": "take", "path": path})

    def _tell(self, slot: _Slot, message: dict[str, Any]) -> bool:
        if slot.proc is None or slot.proc.poll() is not None:
            return False
        try:
            slot.proc.stdin.write(json.dumps(message).encode() + b"\n")
        except OSError:
            return False  # it died: started again by the next hear()
        return True

    def _alive(self, numbers: set[int]) -> set[int]:
        """Those of the upload processes ``numbers`` still running."""
        procs = {n: self.slots[n - 1].proc for n in numbers}
        return {n for n, proc in procs.items() if proc is not None and proc.poll() is None}

    def _restart_the_dead(self) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            code = slot.proc.returncode
            with contextlib.suppress(Exception):
                slot.proc.communicate(timeout=1)
            if slot.starts >= MAX_STARTS:
                slot.proc = None
                self.error = self.error or (
                    f"upload process {slot.number} died {slot.starts} times (last: {code})"
                )
                continue
            print(f"numgrad: the sender's upload process {slot.number} (pid {slot.proc.pid}) "
                  f"died ({code}); started another, which goes on from the journals",
                  file=sys.stderr)  # fmt: skip
            self._start(slot)

    def _lines(self, wait: float) -> list[dict[str, Any]]:
        """Every whole line the upload processes have said, after waiting at most
        ``wait`` s for one (read unbuffered: ``select`` sees all that is pending)."""
        fds = {s.proc.stdout.fileno(): s for s in self.slots if s.proc is not None}
        lines: list[dict[str, Any]] = []
        ready = select.select(list(fds), [], [], wait)[0] if fds else []
        while ready:
            for fd in ready:
                slot = fds[fd]
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # it died: its pipe is not read again until it is restarted
                    fds.pop(fd)
                    continue
                slot.buffer += chunk
                *whole, slot.buffer = slot.buffer.split(b"\n")
                for line in whole:
                    with contextlib.suppress(ValueError):
                        lines.append({**json.loads(line), "slot": slot.number})
            ready = select.select(list(fds), [], [], 0)[0] if fds else []
        return lines

    def _note(self, said: dict[str, Any], children: dict[Path, Any]) -> bool:
        if said.get("event") == "error":
            self.error = self.error or said.get("error")
        if said.get("event") != "journal":
            return False
        tracked = children.get(Path(said["path"]))
        if tracked is None:
            return False
        tracked.remote = said
        return True
