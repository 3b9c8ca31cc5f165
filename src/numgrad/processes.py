"""Process facts from psutil: alive, started when, pool workers, listening; dying with a parent.

Every question numgrad asks about a process (a run's writer, a sweep's sender, a
joblib worker) is answered here, by psutil, never by parsing ``/proc`` by hand.

Examples
--------
>>> import os
>>> alive(os.getpid()), alive(2**22 + 1)
(True, False)
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping

import psutil

_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
START_SLACK_SECONDS = 2.0  # a process's start time and a run's start time differ this much
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def alive(pid: int) -> bool:
    """Is ``pid`` running? A zombie (killed, not yet reaped) is not."""
    try:
        return psutil.Process(pid).status() not in _DEAD
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:
        return True  # another user's process: it exists


def started_at(pid: int) -> float | None:
    """Start time of ``pid`` in epoch seconds; None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def gone(pid: int, since_ms: int | None) -> bool:
    """True when process ``pid``, which was running at ``since_ms``, no longer runs.

    A pid that now belongs to a process started after ``since_ms`` was reused: the
    process it named is gone too.
    """
    if not alive(pid):
        return True
    started = started_at(pid)
    return (
        started is not None
        and since_ms is not None
        and started > since_ms / 1000 + (START_SLACK_SECONDS)
    )


def writer_gone(tags: Mapping[str, str], start_ms: int | None) -> bool:
    """True when the process a run's ``numgrad.host``/``numgrad.pid`` tags name is gone.

    Never true for another host's run: nothing here can see its processes.
    """
    pid = tags.get("numgrad.pid", "")
    if tags.get("numgrad.host") != socket.gethostname() or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and gone(int(pid), start_ms)


def pool_workers() -> list[int]:
    """The pids of this process's live loky (joblib) workers."""
    found = []
    for child in psutil.Process().children():
        try:
            if child.status() not in _DEAD and _loky(child):
                found.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pool_workers_of(pid: int) -> list[int]:
    """The live loky (joblib) workers that process ``pid`` started, also once it is gone
    (their environment names it: ``NUMGRAD_PID``)."""
    found = []
    for process in psutil.process_iter():
        try:
            if _loky(process) and process.environ().get("NUMGRAD_PID") == str(pid):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_pool_worker() -> bool:
    """Is this process a loky (joblib) worker?"""
    return _loky(psutil.Process())


def _loky(process: psutil.Process) -> bool:
    # loky starts its workers as `python -m joblib.externals.loky.backend.popen_loky_posix`
    return any("popen_loky" in a for a in process.cmdline())


def die_with_parent(signum: int) -> bool:
    """Have the kernel send this process ``signum`` when its parent dies; True if it will.

    Linux's ``prctl(PR_SET_PDEATHSIG)``: no polling, and it holds even when the parent is
    SIGKILLed. (Strictly, the kernel watches the parent's thread that started this
    process.) False on other systems, where nothing is set.
    """
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def ending_with_this_process(signum: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when we die.

    Even when this process is SIGKILLed, where no handler of ours runs to stop the
    child. If we are already gone by the time the child asks (a kill between fork and
    exec), the child ends at once instead of running on unwatched.
    """
    parent = os.getpid()
    # Looked up here, not in the child: between fork and exec the child must not load
    # libraries (a lock another thread held at the fork would never be released there).
    prctl = _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def listening(pid: int) -> set[tuple[str, int]]:
    """The ``(address, port)`` pairs that ``pid`` and its descendants listen on."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for process in family:
        try:
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
