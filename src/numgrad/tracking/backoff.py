"""When to try a store again: a capped back-off that never blocks, and blocking retries.

A live run and a sweep's sender must not stop for a store that went away: they ask
:meth:`Backoff.due` before each send and go on with their work when it says no.
A call to a store that is only busy (a locked SQLite file) is retried where it is made,
through tenacity (:data:`BUSY_RETRY`, used by
:meth:`numgrad.tracking.mlflow_store.MlflowStore.call`). Retries decide by an
exception's type or MLflow's error code, never by its text.

Examples
--------
>>> b = Backoff(first=1.0, cap=4.0)
>>> b.due(now=0.0), [b.failed(now=0.0) for _ in range(4)], b.due(now=3.0), b.due(now=4.0)
(True, [1.0, 2.0, 4.0, 4.0], False, True)
"""

from __future__ import annotations

import random
import time

import tenacity

FIRST_SECONDS, CAP_SECONDS = 1.0, 30.0  # 1 s, 2 s, ... 30 s between tries while down


class Backoff:
    """Capped exponential back-off; ``down_since`` is when the first failure came."""

    def __init__(self, first: float = FIRST_SECONDS, cap: float = CAP_SECONDS) -> None:
        self.first, self.cap = first, cap
        self.delay, self.retry_at = first, 0.0
        self.down_since: float | None = None

    def due(self, now: float | None = None) -> bool:
        """Is it time to try again (always, while nothing has failed)?"""
        return (time.monotonic() if now is None else now) >= self.retry_at

    def failed(self, now: float | None = None) -> float:
        """A try failed: wait the current delay, double it (up to the cap); return the wait."""
        now = time.monotonic() if now is None else now
        if self.down_since is None:
            self.down_since = now
        wait, self.retry_at = self.delay, now + self.delay
        self.delay = min(self.delay * 2, self.cap)
        return wait

    def succeeded(self) -> float | None:
        """A try worked: back to the first delay; return how long it was down (or None)."""
        down, self.down_since = self.down_since, None
        self.delay, self.retry_at = self.first, 0.0
        return None if down is None else time.monotonic() - down

    def hurry(self, cap: float) -> None:
        """The store may be back any moment (a run's end): try at most every ``cap`` s."""
        self.cap = self.delay = cap
        self.retry_at = min(self.retry_at, time.monotonic() + cap)


def _busy(exc: BaseException) -> bool:
    """A store too busy to answer now: SQLAlchemy's OperationalError ("database is
    locked"), raw or as MLflow's TEMPORARILY_UNAVAILABLE."""
    if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
        return True
    return any(type(e).__name__ == "OperationalError" for e in (exc, exc.__cause__) if e)


def lost_a_race(exc: BaseException) -> bool:
    """An insert that another writer made first: the database's IntegrityError, in process
    (its cause) or behind a server (MLflow answers it as BAD_REQUEST or INTERNAL_ERROR)."""
    cause = exc.__cause__
    if cause is not None and type(cause).__name__ == "IntegrityError":
        return True
    return getattr(exc, "error_code", None) in ("BAD_REQUEST", "INTERNAL_ERROR")


_jitter = random.Random()
BUSY_RETRY = tenacity.Retrying(
    retry=tenacity.retry_if_exception(_busy),
    # 0.05 s, 0.1 s, ... 2 s, jittered from a generator of its own: never the global
    # random state, which MLflow draws run names from.
    wait=lambda state: min(2.0, 0.05 * 2 ** (state.attempt_number - 1)) * (0.5 + _jitter.random()),
    stop=tenacity.stop_after_attempt(10),
    reraise=True,
)
