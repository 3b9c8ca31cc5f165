"""Stopping a parallel launcher's workers so that each ends its run first.

On Ctrl-C joblib SIGKILLs its loky workers at once, which would leave their runs
RUNNING. Before that happens, the sweep passes its signal on to each worker in a run,
which ends it KILLED (its history uploaded), and waits for those runs to end. Idle
workers are left alone: killing one makes loky kill all the others at once, runs
ending or not, and none can start a queued job anyway (:mod:`numgrad.sweep.stopping`).
Ray's workers are not this process's children: their runs end by Ray, or by the next
``numgrad`` start's orphan check.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from numgrad import signals
from numgrad.processes import pool_workers

# How long workers get to end their runs (figures included, on a busy machine); a second
# Ctrl-C stops the waiting (numgrad.sweep.callback).
GRACE_SECONDS = 30.0
# A process group's signal (a terminal's Ctrl-C) reached the workers too: this long for
# them to end their runs unasked, before a second signal would come in their end.
PATIENCE_SECONDS = 1.0


def stop_workers(signum: int, running_by_pid: Callable[[], dict[int, str]]) -> None:
    """Pass ``signum`` on to this process's pool workers in a run, and wait until their
    runs have ended, at most ``GRACE_SECONDS``.

    ``running_by_pid()`` maps pids to their RUNNING runs. A worker gets the signal once
    per run, after ``PATIENCE_SECONDS``, so that it ends that run KILLED with the
    signal's stop reason. What is left joblib kills (SIGKILL), and the sweep's sender
    ends runs left RUNNING.
    """
    signalled: set[tuple[int, str]] = set()
    start = time.monotonic()
    while time.monotonic() < start + GRACE_SECONDS:
        running = running_by_pid()
        in_runs = [(pid, running[pid]) for pid in pool_workers() if pid in running]
        if not in_runs:
            return
        if time.monotonic() >= start + PATIENCE_SECONDS:
            for pid, run in set(in_runs) - signalled:
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)
                signalled.add((pid, run))
        time.sleep(0.1)


@contextlib.contextmanager
def spawned_blocked() -> Iterator[None]:
    """Pool workers started in the block start with SIGINT, SIGTERM and SIGHUP blocked
    (:func:`numgrad.signals.blocked`): a worker gets them only in a job, where it
    ends its run; an idle one, or one that never got a job, never dies of one, which
    would make loky kill every other worker at once, runs ending or not.
    """
    from multiprocessing import resource_tracker as semaphores

    from joblib.externals.loky.backend import resource_tracker

    # Starting a resource tracker (loky's, and Python's for the pool's semaphores)
    # unblocks SIGINT and SIGTERM in the thread that starts it: both are started first.
    resource_tracker.ensure_running()
    semaphores.ensure_running()
    with signals.blocked():
        yield
