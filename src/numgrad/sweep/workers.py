"""Stopping a parallel launcher's workers so that each ends its run first, also with a dead sweep.

On Ctrl-C joblib SIGKILLs its loky workers at once, which would leave their runs
RUNNING. Before that happens, the sweep passes its signal on to each worker in a run,
which ends it KILLED (its history uploaded), and waits for those runs to end. Idle
workers are left alone: killing one makes loky kill all the others at once, runs
ending or not, and none can start a queued job anyway (:mod:`numgrad.sweep.stopping`).
Ray's workers are not this process's children: their runs end by Ray, or by the next
``numgrad`` start's orphan check.

A sweep killed outright (SIGKILL) can tell nobody. Its loky workers would live on
(loky's queue of jobs is still readable), run the jobs queued for them, and leave
their runs RUNNING. So each worker asks the kernel for a word when the sweep dies
(:func:`bound_to_sweep`): a job then ends its run KILLED, with all it journaled, and
the worker exits instead of taking the next job. A worker that never ran a job never
asked: the sweep's sender, which outlives the sweep, tells it (:func:`tell_workers`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType

from numgrad import signals
from numgrad.processes import die_with_parent, is_pool_worker, pool_workers, pool_workers_of

# How long workers get to end their runs (figures included, on a busy machine); a second
# Ctrl-C stops the waiting (numgrad.sweep.callback).
GRACE_SECONDS = 30.0
# A process group's signal (a terminal's Ctrl-C) reached the workers too: this long for
# them to end their runs unasked, before a second signal would come in their end.
PATIENCE_SECONDS = 1.0
SWEEP_GONE = 143  # a worker's exit status when its sweep died: terminated, as by SIGTERM
NOTICE = signal.SIGUSR1  # the kernel's word to a worker that its parent died (no one else uses it)
_in_job = False  # this worker runs a job now (its run must end first)
_sweep: int | None = None  # the pid of this worker's sweep


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


@contextlib.contextmanager
def bound_to_sweep(on_gone: Callable[[], None]) -> Iterator[None]:
    """Run a job that dies with its sweep: for a loky worker, whose parent is the sweep.

    The kernel tells the worker when its parent dies (:data:`NOTICE`); a job then gets
    SIGTERM once, which ends its run KILLED (:mod:`numgrad.signals`), and an idle worker
    exits. A job that finds its sweep gone, at its start or at its end, exits the
    worker, so that it takes no further job, after calling ``on_gone()`` (which
    removes what Hydra made for a job whose run never started). Anywhere else (the
    sweep's own process, a Ray worker) it does nothing.
    """
    global _in_job, _sweep
    sweep = _sweep = _sweep_pid()
    if sweep is None:
        yield
        return
    if signal.getsignal(NOTICE) is not _on_notice:  # once per worker
        signal.signal(NOTICE, _on_notice)
        die_with_parent(NOTICE)
    if os.getppid() != sweep:  # dead before the kernel could be asked
        on_gone()
        _exit("did not start its job")
    _in_job = True
    try:
        yield
    finally:
        _in_job = False
        if os.getppid() != sweep:
            on_gone()
            _exit("ended its job")


def tell_workers(sweep: int) -> None:
    """Tell the loky workers of sweep ``sweep``, which is gone, as the kernel would.

    The kernel tells only a worker that has run a job (it asks at its first job); one
    still waiting for its first would wait for loky's 300 s idle timeout. An idle one
    ends at once (the signal's default), one in a job as with the kernel's word.
    """
    for pid in pool_workers_of(sweep):
        with contextlib.suppress(OSError):
            os.kill(pid, NOTICE)


def _on_notice(signum: int, frame: FrameType | None) -> None:
    """The kernel's word that the worker's parent died: act once the sweep is gone.

    The kernel says it again each time a thread of the sweep that is the worker's
    parent ends, and the worker's parent then becomes another thread of the sweep:
    only a parent that is no longer the sweep means the sweep is gone.
    """
    if os.getppid() == _sweep:
        return
    signal.signal(NOTICE, signal.SIG_IGN)  # once: a second SIGTERM would cut its end short
    if not _in_job:
        _exit("was idle")
    signal.raise_signal(signal.SIGTERM)


def _sweep_pid() -> int | None:
    """The sweep's pid, when this process is one of its loky workers."""
    pid = os.environ.get("NUMGRAD_PID", "")  # the numgrad command's, inherited
    if not pid.isdigit() or int(pid) == os.getpid() or not is_pool_worker():
        return None
    return int(pid)


def _exit(what: str) -> None:
    """Leave the worker now: loky would otherwise hand it the next queued job."""
    with contextlib.suppress(Exception):
        print(f"numgrad: the sweep (pid {os.environ.get('NUMGRAD_PID')}) is gone: worker "
              f"{os.getpid()} {what} and exits", file=sys.stderr, flush=True)  # fmt: skip
        sys.stdout.flush()
    os._exit(SWEEP_GONE)
