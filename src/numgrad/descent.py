"""Gradient descent driven by a (numerical) gradient engine.

The loop knows nothing of Hydra or MLflow: it yields one :class:`StepRecord` per
evaluated point and the caller decides what to do with it (print, log, plot).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from numgrad.gradient import (
    accuracy_from_labels,
    analytic_gradient,
    loss_from_labels,
    relative_error,
)
from numgrad.precision import working_dtype

Engine = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]

STOP_STEPS = "steps"
STOP_CONVERGED = "converged"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """What one descent step measured, at the weights *before* that step's update.

    ``grad_rel_error`` is ``None`` unless the analytic check is on; it compares with
    the analytic gradient in float64, whatever the descent's dtype. ``seconds`` is the
    wall time since the descent started. Every number is a Python float.
    """

    step: int
    loss: float
    grad_norm: float
    grad_max_abs: float
    weight_norm: float
    accuracy: float
    grad_rel_error: float | None
    seconds: float


class Diverged(ArithmeticError):
    """The loss or the gradient became non-finite; earlier records stay valid."""

    def __init__(self, step: int, quantity: str, value: float) -> None:
        self.step = step
        self.quantity = quantity
        self.value = value
        super().__init__(f"diverged at step {step}: {quantity} is {value!r}")


class Descent:
    """Iterate ``W <- W - lr * grad`` on ``W`` in place, one record per evaluated point.

    With ``steps=N`` it evaluates ``W_0 .. W_N`` (``N + 1`` records, ``N`` updates),
    so the last record describes the final weights; ``steps=0`` only evaluates W0.
    It stops early when the gradient norm falls below ``tol`` (``tol=0`` never),
    and raises :class:`Diverged` when the loss or gradient is not finite.

    ``W`` is updated in place (it is the caller's array, e.g. ``SimpleNet.W``):
    after iteration it holds the final weights and :attr:`last_gradient` the
    gradient evaluated there. Everything runs in ``W``'s dtype (float32 or float64,
    ``x`` is cast to it), except the check (``check=True``): its analytic reference
    is computed in float64 from ``W`` and ``x`` cast up, so that float32's rounding
    is measured, not shared by the reference.

    Examples
    --------
    >>> import numpy as np
    >>> from numgrad.gradient import vectorized_gradient
    >>> W = np.zeros((2, 3))
    >>> x, labels = np.array([[0.6, 0.9]]), np.array([2])
    >>> d = Descent(W, x, labels, vectorized_gradient, h=1e-4, lr=0.5, steps=3)
    >>> [r.step for r in d], d.stop_reason, d.steps_taken
    ([0, 1, 2, 3], 'steps', 3)
    """

    def __init__(
        self,
        W: np.ndarray,
        x: np.ndarray,
        labels: np.ndarray,
        engine: Engine,
        *,
        h: float,
        lr: float,
        steps: int,
        tol: float = 0.0,
        check: bool = False,
    ) -> None:
        self.W, self.x, self.labels = W, np.asarray(x, dtype=working_dtype(W)), labels
        self.engine, self.h, self.lr = engine, h, lr
        self.steps, self.tol, self.check = steps, tol, check
        self.stop_reason: str | None = None
        self.steps_taken = 0
        self.last_gradient: np.ndarray | None = None
        self.last_record: StepRecord | None = None

    def __iter__(self) -> Iterator[StepRecord]:
        start = time.perf_counter()
        for step in range(self.steps + 1):
            record, grad = self._evaluate(step, start)
            self.last_record, self.last_gradient = record, grad
            yield record
            if step == self.steps:
                self.stop_reason = STOP_STEPS
                return
            if record.grad_norm < self.tol:
                self.stop_reason = STOP_CONVERGED
                return
            # Overflow here is reported as divergence at the next evaluation,
            # not as a numpy warning in the middle of the run.
            with np.errstate(over="ignore", invalid="ignore"):
                self.W -= self.lr * grad
            self.steps_taken = step + 1

    def _evaluate(self, step: int, start: float) -> tuple[StepRecord, np.ndarray]:
        with np.errstate(all="ignore"):  # non-finite values are checked just below
            loss = loss_from_labels(self.W, self.x, self.labels)
            grad = self.engine(self.W, self.x, self.labels, self.h)
        if not math.isfinite(loss):
            raise Diverged(step, "loss", loss)
        if not np.isfinite(grad).all():
            raise Diverged(step, "gradient", float(grad[~np.isfinite(grad)].flat[0]))
        weight_norm = _norm(self.W)
        if not math.isfinite(weight_norm):
            raise Diverged(step, "weight norm", weight_norm)
        rel_error = None
        if self.check:
            W64, x64 = np.asarray(self.W, dtype=np.float64), np.asarray(self.x, dtype=np.float64)
            rel_error = relative_error(grad, analytic_gradient(W64, x64, self.labels))
        record = StepRecord(
            step=step,
            loss=float(loss),
            grad_norm=_norm(grad),
            grad_max_abs=float(np.abs(grad).max()),
            weight_norm=weight_norm,
            accuracy=accuracy_from_labels(self.W, self.x, self.labels),
            grad_rel_error=rel_error,
            seconds=time.perf_counter() - start,
        )
        return record, grad


def _norm(a: np.ndarray) -> float:
    """The L2 norm without overflow in the squares (weights near 1e300 still have one)."""
    largest = float(np.abs(a).max())
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    with np.errstate(over="ignore"):
        return largest * float(np.linalg.norm(a / largest))
