"""The sink of ``tracking.enabled=false``: accepts everything, records nothing.

Examples
--------
>>> with NullSink() as sink:
...     sink.log_start(None)
>>> sink.synced, sink.describe()
(True, None)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NullSink:
    """The sink of ``tracking.enabled=false``: accepts everything, records nothing."""

    run_id: str | None = None
    synced = True

    def __enter__(self) -> NullSink:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def log_start(self, W_init: Any) -> None:
        pass

    def log_data(self, x: Any, t: Any, data_cfg: Any, seed: int, *, context: str = "") -> None:
        pass

    selected: frozenset[int] = frozenset()  # no step goes anywhere

    def log_step(self, record: Any, extra: Mapping[str, float] | None = None) -> None:
        pass

    def log_end(self, descent: Any, W_final: Any = None, evaluation: Any = None) -> None:
        pass

    def log_stopped(self, descent: Any) -> None:
        pass

    def describe(self) -> str | None:
        return None
