"""``history.csv``: one row per descent step, at most ``history_max_rows`` of them.

Rows are appended as the run goes; when the file would exceed its bound, every other
row is dropped and from then on only every ``2 * stride``-th step is kept: the rows
stay evenly spaced over the whole run, the first step always among them and the last
step added at the end. A run of a trillion steps keeps a file of bounded size, and a
run of a million steps or fewer keeps every step. The columns used for the run's
figures are kept in memory (8 bytes a value), so the figures need no re-reading.
"""

from __future__ import annotations

import array
import csv
import os
from pathlib import Path
from typing import Any

from numgrad.tracking.journal import JournalError
from numgrad.tracking.records import STEP_FIELDS

FIELDS = STEP_FIELDS  # one column per field of the step record


class History:
    """Writes ``history.csv`` at ``path``; :meth:`add` each record, :meth:`flush` now and then.

    Examples
    --------
    >>> import tempfile
    >>> from numgrad.descent import StepRecord
    >>> with tempfile.TemporaryDirectory() as d:
    ...     history = History(Path(d) / "history.csv", max_rows=4)
    ...     for step in range(10):
    ...         history.add(StepRecord(step, 1.0, 0.5, 0.5, 1.0, 1.0, None, 0.0))
    ...     history.close()
    ...     list(history.steps)
    [0, 4, 8, 9]
    """

    def __init__(self, path: Path, max_rows: int) -> None:
        self.path, self.max_rows = path, max(int(max_rows), 2)
        self.stride = 1
        self.steps = array.array("q")  # the rows in the file: for the figures
        self.loss = array.array("d")
        self.grad_norm = array.array("d")
        self._pending: list[Any] = []
        self._last: Any = None
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(FIELDS)

    @property
    def last(self) -> Any:
        """The last record added (None before the first)."""
        return self._last

    def add(self, record: Any) -> None:
        self._last = record
        if record.step % self.stride == 0:
            self._pending.append(record)

    def flush(self) -> None:
        """Append the pending rows, thinning the file first if they would not fit."""
        # One row is kept free for the last step, which close() adds if it is off-stride.
        while len(self.steps) + len(self._pending) > self.max_rows - 1:
            self._thin()
        rows, self._pending = self._pending, []
        self._write(rows)

    def close(self) -> None:
        """Write what is pending, and the last step seen if thinning left it out."""
        self.flush()
        last = self._last
        if last is not None and (not self.steps or self.steps[-1] != last.step):
            self._write([last])

    def _write(self, rows: list[Any]) -> None:
        if not rows:
            return
        try:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerows(_row(r) for r in rows)
        except OSError as exc:  # disk full, a read-only dir: one line naming the file
            raise JournalError.writing(exc, str(self.path)) from None
        for r in rows:
            self.steps.append(int(r.step))
            self.loss.append(float(r.loss))
            self.grad_norm.append(float(r.grad_norm))

    def _thin(self) -> None:
        """Double the stride: keep every other kept step, in the file and in memory."""
        self.stride *= 2
        self._pending = [r for r in self._pending if r.step % self.stride == 0]
        keep = [i for i, step in enumerate(self.steps) if step % self.stride == 0]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(self.path, newline="") as src, open(tmp, "w", newline="") as dst:
            reader, writer = csv.reader(src), csv.writer(dst)
            writer.writerow(next(reader))
            writer.writerows(row for row in reader if int(row[0]) % self.stride == 0)
        os.replace(tmp, self.path)
        for name in ("steps", "loss", "grad_norm"):
            column = getattr(self, name)
            setattr(self, name, array.array(column.typecode, (column[i] for i in keep)))


def _row(r: Any) -> tuple[Any, ...]:
    # float() first: a numpy scalar would be written as "np.float64(...)"; None is "".
    values = (getattr(r, name) for name in FIELDS[1:])
    return (int(r.step), *("" if v is None else float(v) for v in values))
