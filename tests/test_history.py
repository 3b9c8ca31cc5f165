"""history.csv: every step up to a bound, then thinned evenly (numgrad.tracking.history)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from numgrad.descent import StepRecord
from numgrad.tracking.history import FIELDS, History


def record(step: int) -> StepRecord:
    return StepRecord(step, 1.0 / (step + 1), 0.5, 0.25, 1.0, 0.5, None, step * 1e-3)


def rows(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_every_step_when_it_fits_exactly_as_given(tmp_path):
    history = History(tmp_path / "h.csv", max_rows=100)
    for step in range(10):
        history.add(record(step))
        if step % 3 == 0:
            history.flush()
    history.close()
    table = rows(tmp_path / "h.csv")
    assert tuple(table[0]) == FIELDS
    assert [int(r[0]) for r in table[1:]] == list(range(10))
    assert [float(r[1]) for r in table[1:]] == [1.0 / (s + 1) for s in range(10)]  # exact
    assert table[1][6] == ""  # no gradient check: empty cell
    assert list(history.steps) == list(range(10))


@pytest.mark.parametrize(("steps", "max_rows"), [(10, 4), (1000, 100), (12345, 1000), (99, 2)])
def test_bounded_even_first_and_last(tmp_path, steps, max_rows):
    history = History(tmp_path / "h.csv", max_rows=max_rows)
    for step in range(steps + 1):
        history.add(record(step))
        if step % 37 == 0:
            history.flush()
    history.close()
    kept = [int(r[0]) for r in rows(tmp_path / "h.csv")[1:]]
    assert len(kept) <= max_rows
    assert kept[0] == 0 and kept[-1] == steps
    gaps = np.diff(kept[:-1])
    assert gaps.size == 0 or gaps.min() == gaps.max()  # evenly spaced, the last step added
    assert len(kept) >= max_rows // 2 - 1 or len(kept) == steps + 1  # not thinner than needed
    assert list(history.steps) == kept
    assert list(history.loss) == [1.0 / (s + 1) for s in kept]


def test_rows_are_written_as_the_run_goes(tmp_path):
    history = History(tmp_path / "h.csv", max_rows=1000)
    for step in range(5):
        history.add(record(step))
    history.flush()
    assert len(rows(tmp_path / "h.csv")) == 6  # before the end: a crash keeps them
