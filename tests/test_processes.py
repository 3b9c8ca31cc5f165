"""Process facts and the parent-death request (:mod:`numgrad.processes`), on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from numgrad.processes import (
    alive,
    is_pool_worker,
    pool_workers,
    pool_workers_of,
    writer_gone,
)
from numgrad.sweep.workers import bound_to_sweep
from tests.conftest import wait_for

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

# A child that asks for SIGUSR1 at its parent's death, prints its pid and whether the
# kernel took the request, then, for each SIGUSR1, whether its parent is still the one
# it started with.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from numgrad.processes import die_with_parent
    first = os.getppid()
    def said(signum, frame):
        print("same parent" if os.getppid() == first else "parent gone", flush=True)
    signal.signal(signal.SIGUSR1, said)
    print(os.getpid(), die_with_parent(signal.SIGUSR1), flush=True)
    time.sleep(30)
""")


def _parent(start_child: str) -> subprocess.Popen[str]:
    """A process that starts CHILD as ``start_child`` says, then waits."""
    code = textwrap.dedent(f"""
        import subprocess, sys, threading, time
        CHILD = {CHILD!r}
        def start():
            global child
            child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=sys.stdout)
        {start_child}
        time.sleep(30)
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


@contextlib.contextmanager
def _family(body: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A parent running ``body`` and its child that asked for the word; both gone after."""
    parent = _parent(body)
    pid = None
    try:
        pid, taken = parent.stdout.readline().split()
        assert taken == "True"  # the kernel took the request
        yield parent, int(pid)
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
        parent.stdout.close()


@linux
def test_a_child_hears_of_its_parents_death_even_by_sigkill():
    with _family("start()") as (parent, _):
        parent.kill()
        parent.wait()
        assert parent.stdout.readline().strip() == "parent gone"


@linux
def test_the_word_also_comes_when_the_thread_that_started_the_child_ends():
    # Why a worker checks its parent before it acts (sweep/workers.py): the kernel sends
    # the signal when the parent's *thread* that started the child ends, though the
    # parent lives on, and again for each thread of a dying parent.
    # The thread ends 3 s after it started the child, once the child has asked.
    body = "t = threading.Thread(target=lambda: (start(), time.sleep(3))); t.start(); t.join()"
    with _family(body) as (parent, pid):
        assert parent.stdout.readline().strip() == "same parent"
        assert parent.poll() is None and alive(pid)
        parent.kill()
        parent.wait()
        assert parent.stdout.readline().strip() == "parent gone"


def test_this_process_is_no_pool_worker_and_has_none():
    assert not is_pool_worker()
    assert pool_workers() == [] == pool_workers_of(os.getpid())


def test_outside_a_pool_worker_a_job_is_not_bound_to_any_sweep(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMGRAD_PID", str(os.getppid()))  # a live process that is not ours
    gone = []
    with bound_to_sweep(lambda: gone.append(True)):
        ran = True
    assert ran and gone == []
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # no handler left behind


def test_processes_started_here_are_alive_until_they_end():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(proc.pid)
        assert psutil.Process(proc.pid).ppid() == os.getpid()
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not alive(proc.pid), timeout=10)


def test_a_runs_writer_is_gone_only_with_evidence():
    """A run without an end is ended KILLED only when the host, pid and start time of its
    start record name a process that no longer runs: a live pid started after the run
    began is a reused pid, and another host's pid says nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host = socket.gethostname()
    tags = {"numgrad.host": host, "numgrad.pid": str(proc.pid)}
    started_ms = int(psutil.Process(proc.pid).create_time() * 1000)
    try:
        assert not writer_gone(tags, started_ms)  # its own writer, running
        assert not writer_gone(tags, int(time.time() * 1000))  # a run begun after it started
        assert writer_gone(tags, started_ms - 3_600_000)  # the run began an hour before: reused
        assert not writer_gone({**tags, "numgrad.host": host + "-other"}, started_ms - 3_600_000)
    finally:
        proc.kill()
        proc.wait()
    assert writer_gone(tags, started_ms)  # gone
    assert not writer_gone({**tags, "numgrad.host": host + "-other"}, started_ms)  # not ours to say
    assert not writer_gone({"numgrad.host": host}, started_ms)  # no pid: no evidence
    assert not writer_gone({"numgrad.host": host, "numgrad.pid": str(os.getpid())}, 0)  # this one
