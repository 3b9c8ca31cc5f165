"""A sweep stopped by a signal starts no job after it: the mark, and the check at each job's start.

A terminal's Ctrl-C, ``timeout`` and ``docker stop`` signal the sweep's whole process
group, the main process and every joblib worker at once; ``kill`` signals the main
process alone. Either way the main process marks the sweep dir (:func:`mark`) first,
then passes the signal on to its pool workers (:mod:`numgrad.sweep.workers`). A
worker whose job got the signal ends that job's run KILLED (the sink writes its end
whole) and goes back to its pool for the next job: :func:`refuse_job`, at the start
of every job, records that job ``NOT_STARTED`` instead of running it, once this
process got a signal or the sweep dir carries the mark.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     before = stopping(Path(d), worker=False)
...     mark(Path(d), 15)
...     before, stopping(Path(d), worker=False)
(None, 15)
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from numgrad import signals
from numgrad.sweep.jobs import write_job_status
from numgrad.sweep.summary import NOT_STARTED

STOPPING_FILE = ".numgrad_stopping"  # in the sweep dir: the signal that stops the sweep


def mark(sweep_dir: Path, signum: int) -> None:
    """Say in ``sweep_dir`` that the sweep is stopping on ``signum``: no job starts now."""
    with contextlib.suppress(OSError):  # no sweep dir yet: no job has started either
        (sweep_dir / STOPPING_FILE).write_text(str(signum))


def clear(sweep_dir: Path) -> None:
    """Remove the mark (an earlier sweep's, in a reused sweep dir, or this one's at its end)."""
    with contextlib.suppress(OSError):
        (sweep_dir / STOPPING_FILE).unlink(missing_ok=True)


def stopping(sweep_dir: Path, *, worker: bool) -> int | None:
    """The signal that stops the sweep of ``sweep_dir``, None while it runs.

    A pool ``worker`` also counts a signal it got itself: it may come before the mark.
    """
    if worker and signals.received() is not None:
        return signals.received()
    try:
        return int((sweep_dir / STOPPING_FILE).read_text() or signal.SIGTERM)
    except (OSError, ValueError):
        return None


def refuse_job(config: Any) -> None:
    """In Hydra's ``on_job_start``: a job of a stopping sweep is recorded ``NOT_STARTED``
    in its status file, and the signal raised instead of running it."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    # The sweep's main process is the one numgrad started (its pid is in the
    # environment every worker inherits); there, a signal has stopped the sweep already.
    worker = os.environ.get("NUMGRAD_PID") not in (None, str(os.getpid()))
    signum = stopping(sweep_dir, worker=worker)
    if signum is None:
        return
    output_dir, overrides = Path(str(config.hydra.runtime.output_dir)), config.hydra.overrides.task
    with contextlib.suppress(OSError):
        write_job_status(
            output_dir, [str(o) for o in overrides], NOT_STARTED,
            job=int(config.hydra.job.num), pid=os.getpid(),
            error=f"the sweep was stopping ({signal.Signals(signum).name})",
        )  # fmt: skip
    raise signals.exception_for(signum)
