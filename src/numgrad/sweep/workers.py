"""Stopping a parallel launcher's workers so that each ends its run first, also with a dead sweep.

On Ctrl-C joblib SIGKILLs its loky workers at once, which would leave their runs
RUNNING. Before that happens, the sweep sends each worker SIGTERM: a worker in a run
ends it KILLED (its history uploaded); an idle worker exits, so it cannot start a
queued job. Ray's workers are not this process's children: their runs end by Ray, or
by the next ``numgrad`` start's orphan check.

A sweep killed outright (SIGKILL) can tell nobody. Its loky workers would live on
(loky's queue of jobs is still readable), run the jobs queued for them, and leave
their runs RUNNING. So each worker asks the kernel for SIGTERM when the sweep dies
(:func:`bound_to_sweep`): a job then ends its run KILLED, with all it journaled, and
the worker exits instead of taking the next job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator

from numgrad.processes import die_with_parent, is_pool_worker, pool_workers

GRACE_SECONDS = 10.0  # how long workers get to end their runs
SWEEP_GONE = 143  # a worker's exit status when its sweep died: terminated, as by SIGTERM


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


@contextlib.contextmanager
def bound_to_sweep(on_gone: Callable[[], None]) -> Iterator[None]:
    """Run a job that dies with its sweep: for a loky worker, whose parent is the sweep.

    The kernel sends the worker SIGTERM when the sweep dies, which ends the job's run
    KILLED (:mod:`numgrad.signals`). A job that finds its sweep gone, at its start or
    at its end, exits the worker, so that it takes no further job; at its start it
    first calls ``on_gone()`` (which removes what Hydra made for a job that never ran).
    Anywhere else (the sweep's own process, a Ray worker) it does nothing.
    """
    sweep = _sweep_pid()
    if sweep is None:
        yield
        return
    die_with_parent(signal.SIGTERM)
    if os.getppid() != sweep:  # dead before the kernel could be asked
        on_gone()
        _exit(sweep, "did not start its job")
    try:
        yield
    finally:
        if os.getppid() != sweep:
            _exit(sweep, "ended its job")


def _sweep_pid() -> int | None:
    """The sweep's pid, when this process is one of its loky workers."""
    pid = os.environ.get("NUMGRAD_PID", "")  # the numgrad command's, inherited
    if not pid.isdigit() or int(pid) == os.getpid() or not is_pool_worker():
        return None
    return int(pid)


def _exit(sweep: int, what: str) -> None:
    """Leave the worker now: loky would otherwise hand it the next queued job."""
    with contextlib.suppress(Exception):
        print(f"numgrad: the sweep (pid {sweep}) is gone: worker {os.getpid()} {what} "
              "and exits", file=sys.stderr, flush=True)  # fmt: skip
        sys.stdout.flush()
    os._exit(SWEEP_GONE)
