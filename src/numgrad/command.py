"""One wrapper for the four commands: exceptions and signals become one line and an exit status.

``numgrad``, ``numgrad-ui``, ``numgrad-sync`` and ``numgrad-rerun`` each hand their work
to :func:`run_command`. SIGINT and SIGTERM are routed through :mod:`numgrad.signals`
before the work begins, so a signal at any moment, imports included, ends the command
with one line and 130 or 143, never a traceback. An exception says its own exit status
in its class attribute ``exit_status`` (:class:`UsageError`, :class:`NotSynced`,
``ConfigError``, ``TrackingError``, ``JournalError``); what says none is a bug and keeps
its traceback.

======  =================================================================================
status  meaning
======  =================================================================================
0       done
1       :data:`FAILED`: a run failed or diverged, a sweep's job did, a journal was skipped
2       :data:`USAGE`: bad input or tracking settings, nothing run
75      :data:`NOT_SYNCED`: finished, but recorded only in the local journal
130     :data:`INTERRUPTED`: Ctrl-C (SIGINT)
143     :data:`TERMINATED`: SIGTERM (128 + the signal's number)
======  =================================================================================

Examples
--------
>>> exit_status(UsageError("no such file")), exit_status(NotSynced("journal only"))
(2, 75)
>>> exit_status(KeyboardInterrupt()), exit_status(signals.Terminated())
(130, 143)
>>> exit_status(KeyError("a bug")) is None
True
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import NoReturn

from numgrad import signals

__all__ = [
    "FAILED", "INTERRUPTED", "NOT_SYNCED", "TERMINATED", "USAGE",
    "NotSynced", "UsageError", "describe", "exit_status", "one_line", "report", "run_command",
]  # fmt: skip

FAILED, USAGE, NOT_SYNCED, INTERRUPTED, TERMINATED = 1, 2, 75, 130, 143


class UsageError(Exception):
    """A command line or an input the command refuses before doing anything: exit 2."""

    exit_status = USAGE


class NotSynced(Exception):
    """The run finished, but its records are only in its journal: exit 75."""

    exit_status = NOT_SYNCED


def exit_status(exc: BaseException) -> int | None:
    """The exit status ``exc`` ends a command with; None when it is a bug (or SystemExit)."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, signals.Terminated):
        return 128 + exc.signum
    if isinstance(exc, ArithmeticError):
        # Diverged and StepTooSmall: the numeric core imports numpy only, so its
        # exceptions are known by their builtin base instead of an attribute.
        return FAILED
    status = getattr(type(exc), "exit_status", None)
    return status if isinstance(status, int) else None


def describe(exc: BaseException) -> str:
    """What a command prints after its name for ``exc``: one line.

    Examples
    --------
    >>> describe(KeyboardInterrupt()), describe(UsageError("x.csv: no such file"))
    ('interrupted', 'error: x.csv: no such file')
    """
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, signals.Terminated):
        return "terminated"
    if exit_status(exc) == NOT_SYNCED:
        return str(exc)  # what happened, not an error: the journal has everything
    return f"error: {one_line(exc)}"


def report(prog: str, exc: BaseException) -> int | None:
    """Print ``prog: <one line>`` for ``exc`` on stderr and return its exit status.

    Prints nothing and returns None for an exception without one: the caller re-raises it.
    """
    status = exit_status(exc)
    if status is not None:
        print(f"{prog}: {describe(exc)}", file=sys.stderr, flush=True)
    return status


def run_command(prog: str, body: Callable[[], int | None]) -> NoReturn:
    """Run a command's ``body`` with signals routed; exit with its status or its error's.

    ``body`` returns the exit status (None for 0). An exception with an exit status is
    reported in one line; SystemExit (argparse's usage errors) passes as it is; anything
    else is a bug and keeps its traceback.
    """
    with signals.raising():
        try:
            status = body() or 0
        except BaseException as exc:
            status = report(prog, exc)
            if status is None:
                raise
    sys.exit(status)


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages folded into one line.

    Examples
    --------
    >>> nl, tab = chr(10), chr(9)
    >>> one_line(ValueError(f"Could not find 'data/x'{nl}Options:{nl}{tab}a{nl}{tab}b"))
    "Could not find 'data/x'; Options: a, b"
    """
    parts = [str(exc)]
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in parts[0]:
        parts.append(str(cause))
    text = "; ".join(parts)
    text = re.sub(r"\n\s*(full_key|object_type|reference_type)=?:?.*", "", text)
    text = re.sub(r":\s*\n\s*\t", ": ", text)
    text = re.sub(r"\n\s*\t", ", ", text)
    text = re.sub(r"\s*\n+\s*", "; ", text).strip("; ")
    text = re.sub(r"; (Config search path|See https://hydra\.cc).*", "", text)
    override = getattr(exc, "override", None)  # Hydra's OverrideParseException
    if override is not None and str(override) not in text:
        text = f"cannot parse override {str(override)!r}: {text}"
    return text
