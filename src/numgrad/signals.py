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

__all__ = [
    "Terminated",
    "exception_for",
    "held",
    "on_signal",
    "pending",
    "raising",
    "received",
    "signal_of",
]

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # the signals that stop numgrad
_depth = 0  # how many held() blocks are open
_pending: int | None = None  # the first signal received while held
_received: int | None = None  # the last signal this process received through numgrad
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


def signal_of(exc: BaseException | None) -> int | None:
    """The signal ``exc`` stands for (KeyboardInterrupt: SIGINT); None for anything else.

    Examples
    --------
    >>> signal_of(KeyboardInterrupt()), signal_of(Terminated()), signal_of(ValueError())
    (2, 15, None)
    """
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    return int(exc.signum) if isinstance(exc, Terminated) else None


def received() -> int | None:
    """The last SIGINT/SIGTERM/SIGHUP this process received through :func:`raising`, or
    one waiting while :func:`blocked`; None if none.

    A sweep's pool worker asks before it starts a job: one that got the signal (a
    terminal's Ctrl-C reaches the whole process group) starts none.
    """
    waiting = sorted(set(STOPPING) & signal.sigpending())
    return _received or (int(waiting[0]) if waiting else None)


def pending() -> int | None:
    """The signal received inside the open :func:`held` blocks, not raised yet; None if none."""
    return _pending


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _received
    _received = signum
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
    # A pool worker starts with them blocked (:func:`blocked`): here they reach it, a
    # signal that came meanwhile at once.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP in this thread for the block: the processes it
    starts meanwhile start with them blocked, and receive them only inside
    :func:`raising` (a sweep's pool workers: in a job, never while idle). This
    process still receives them, in the main thread, through any other thread.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def held(*, absorb: bool = False) -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM for the block; a signal received meanwhile is raised at its end.

    With ``absorb``, a signal received in the block is not raised: it is appended to
    the list the block gets, for the caller to act on (a run or a sweep ending
    anyway finishes its end whole, then says how it was stopped).

    Examples
    --------
    >>> with raising(), held(absorb=True) as caught:
    ...     signal.raise_signal(signal.SIGTERM)
    >>> caught == [signal.SIGTERM]
    True
    """
    global _depth, _pending
    before, caught = _pending, []
    _depth += 1
    try:
        yield caught
    finally:
        _depth -= 1
        if absorb and before is None and _pending is not None:
            caught.append(_pending)
            _pending = None
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
