"""When to try a store that did not answer again: one capped back-off, never blocking.

A live run and a sweep's sender must not stop for a store that went away: they ask
:meth:`Backoff.due` before each send and go on with their work when it says no.
(Blocking retries, where a process has nothing else to do, use tenacity:
:meth:`numgrad.tracking.mlflow_store.MlflowStore.call`.)

Examples
--------
>>> b = Backoff(first=1.0, cap=4.0)
>>> b.due(now=0.0), [b.failed(now=0.0) for _ in range(4)], b.due(now=3.0), b.due(now=4.0)
(True, [1.0, 2.0, 4.0, 4.0], False, True)
"""

from __future__ import annotations

import time

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
