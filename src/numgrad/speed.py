"""The two garbage-collector settings numgrad keeps, each for a gain a benchmark shows.

With mlflow and SQLAlchemy loaded, a process holds ~300,000 objects, and every full
collection scans them all: during a long descent (which allocates a record per step)
and again while Python tears the process down. ``gc.freeze`` moves the objects that
exist at the moment it is called out of the collector's reach, for good.

- :func:`freeze_loaded`, once the store is open: the descent's collections then scan
  its own objects only (``benchmarks/bench_tracking.py``, per-step slope);
- :func:`skip_exit_collections`, at exit: the teardown's collections, ~0.6-1.2 s per
  tracked process, free memory the OS takes back anyway (the same benchmark's fixed
  cost, and ``bench_sweep.py``).

Examples
--------
>>> freeze_loaded()
>>> freeze_loaded()  # once per process
"""

from __future__ import annotations

import atexit
import gc

_frozen = False


def freeze_loaded() -> None:
    """Put everything loaded so far (mlflow, SQLAlchemy, ...) out of the collector's reach."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


def skip_exit_collections() -> None:
    """At exit, freeze everything: no full collections while the process is torn down."""
    atexit.register(gc.freeze)
