"""Stopping a parallel launcher's workers so that each ends its run first.

On Ctrl-C joblib SIGKILLs its loky workers at once, which would leave their runs
RUNNING. Before that happens, the sweep sends each worker SIGTERM: a worker in a run
ends it KILLED (its history uploaded); an idle worker exits, so it cannot start a
queued job. Ray's workers are not this process's children: their runs end by Ray, or
by the next ``numgrad`` start's orphan check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from numgrad.processes import pool_workers

GRACE_SECONDS = 10.0  # how long workers get to end their runs


def stop_workers(running_by_pid: Callable[[], dict[int, str]]) -> None:
    """SIGTERM this process's pool workers until they are gone, at most ``GRACE_SECONDS``.

    A worker in a run (``running_by_pid()`` maps worker pids to their RUNNING runs)
    gets one SIGTERM per run, so that it ends that run; a worker without one gets
    SIGTERM until it exits. What is left joblib kills (SIGKILL), and the sweep's end
    closes runs left RUNNING.
    """
    signalled: set[tuple[int, str]] = set()
    deadline = time.monotonic() + GRACE_SECONDS
    while time.monotonic() < deadline:
        workers = pool_workers()
        if not workers:
            return
        running = running_by_pid()
        for pid in workers:
            run_id = running.get(pid)
            if run_id is None or (pid, run_id) not in signalled:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                if run_id is not None:
                    signalled.add((pid, run_id))
        time.sleep(0.25)
