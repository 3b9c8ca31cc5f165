"""SIGINT and SIGTERM as exceptions, held back while a write must not be cut in half.

SIGINT already raises ``KeyboardInterrupt``; numgrad turns SIGTERM into
:class:`Terminated`, so that a run or a sweep ends its MLflow run KILLED instead of
dying with it RUNNING. Inside ``with held():`` a signal is remembered and raised when
the block ends: a new store's tables are never half created (a broken store), and a
journal line is never half written.

Examples
--------
>>> with raising():
...     with held():
...         signal.raise_signal(signal.SIGTERM)  # remembered, not raised yet
...         print("the write completes")
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
numgrad.signals.Terminated: terminated by signal 15
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["Terminated", "exception_for", "held", "on_signal", "raising"]

_depth = 0  # how many held() blocks are open
_pending: int | None = None  # the first signal received while held
_hooks: list[Callable[[int], None]] = []  # run before the exception is raised


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM.

    A BaseException, like KeyboardInterrupt: ``except Exception`` must not swallow it.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")


def exception_for(signum: int) -> BaseException:
    """The exception a signal becomes: KeyboardInterrupt for SIGINT, else Terminated."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth:
        _pending = _pending or signum  # raised when the outermost held() block ends
        return
    for hook in list(_hooks):
        hook(signum)
    raise exception_for(signum)


@contextlib.contextmanager
def raising() -> Iterator[None]:
    """Route SIGTERM and SIGHUP (and SIGINT, where Python's default is in place) through numgrad.

    Only in the main thread; nested uses keep the outer handlers. The previous
    handlers are restored on exit. SIGINT is left alone where someone else set it
    (joblib's workers ignore it: Ctrl-C is their parent's business).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    if signal.getsignal(signal.SIGTERM) is not _handler:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _handler)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # a closed terminal: like SIGTERM
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, _handler)  # (nohup ignores it)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the block; a signal received meanwhile is raised at its end."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            for hook in list(_hooks):
                hook(signum)
            raise exception_for(signum)


@contextlib.contextmanager
def on_signal(hook: Callable[[int], None]) -> Iterator[None]:
    """Call ``hook(signum)`` before a signal's exception is raised, while in the block.

    A sweep uses it to let its pool workers end their runs before the pool is torn down.
    """
    _hooks.append(hook)
    try:
        yield
    finally:
        _hooks.remove(hook)
