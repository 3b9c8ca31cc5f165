"""A helper process's reports to the process that started it: one JSON object a line.

A sweep's sender and its upload processes talk to their starters over their own
stdout; whatever a library prints must not mix into it. :func:`take_stdout` keeps the
real stdout for the reports alone and sends everything else to stderr.

Examples
--------
>>> import io
>>> out = Reports(io.StringIO())
>>> out.say({"event": "ready"})
>>> out.stream.getvalue()
'{"event": "ready"}\\n'
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, TextIO


class Reports:
    """Where :meth:`say` writes: ``stream``, stdout until :func:`take_stdout`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def say(self, message: dict[str, Any]) -> None:
        """Write one report; a starter that was killed outright no longer listens."""
        with contextlib.suppress(OSError):
            self.stream.write(json.dumps(message) + "\n")
            self.stream.flush()


def take_stdout(reports: Reports) -> None:
    """Give this process's real stdout to ``reports`` alone; what is printed goes to stderr."""
    reports.stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
