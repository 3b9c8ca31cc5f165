"""Gradient descent driven by a (numerical) gradient engine.

The loop knows nothing of Hydra or MLflow: it yields one :class:`StepRecord` per
evaluated point and the caller decides what to do with it (print, log, plot).
"""

from __future__ import annotations

import itertools
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
from numgrad.precision import advised_h, working_dtype
from numgrad.schemes import SCHEMES, Scheme

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
    """The loss, the gradient or the weights' norm became non-finite; earlier records stay valid.

    ``quantity`` is ``"loss"``, ``"gradient"`` or ``"weight norm"``, ``value`` the
    non-finite value (nan, inf or -inf).
    """

    def __init__(self, step: int, quantity: str, value: float) -> None:
        self.step = step
        self.quantity = quantity
        self.value = value
        super().__init__(f"diverged at step {step}: {quantity} is {value!r}")

    def __reduce__(self) -> tuple[type, tuple[int, str, float]]:
        return type(self), (self.step, self.quantity, self.value)  # survives pickling


class StepTooSmall(ArithmeticError):
    """The step ``h`` hides the gradient: difference quotients are exactly 0 where it is not.

    Attributes: ``step`` (the descent step), ``h``, ``weight_max`` (``max|W|`` there),
    ``h_min`` (the scheme's :meth:`~numgrad.schemes.Scheme.h_min` at ``W``), ``hidden``
    (the largest analytic gradient among the zeros), ``best_h`` (the scheme's textbook
    h in W's dtype) and ``scheme``. If ``h < h_min``, ``W`` has outgrown ``h`` (some
    ``w +- h == w``), or, for the complex step, ``h x`` underflows. Else the loss itself
    does not change by a representable amount over the step.
    The message is one line and names the config field, ``gradient.h``; its advice
    comes from :func:`numgrad.precision.advised_h`, enough as printed.

    Examples
    --------
    >>> str(StepTooSmall(0, 1e-320, 0.9, 3.7e-308, 0.4, 2.2e-16, "complex"))[-48:]
    'complex step (h·x underflows): use h >= 3.7e-308'
    >>> at_limit = StepTooSmall(0, 3.7e-308, 0.9, 3.7e-308, 0.4, 2.2e-16, "complex")
    >>> str(at_limit)[:35]  # not below the limit: the loss, not h x, is the trouble
    'at step 0 every difference quotient'
    """

    def __init__(
        self,
        step: int,
        h: float,
        weight_max: float,
        h_min: float,
        hidden: float,
        best_h: float,
        scheme: str = "central",
    ) -> None:
        self.step, self.h, self.weight_max = step, h, weight_max
        self.h_min, self.hidden, self.best_h, self.scheme = h_min, hidden, best_h, scheme
        if h < h_min:  # the scheme says which limit h is under
            limit = SCHEMES[scheme].below_limit(step, weight_max)
            message = f"at step {step} gradient.h={h:g} {limit}: use h >= {advised_h(h_min)!r}"
        else:
            message = (
                f"at step {step} every difference quotient with gradient.h={h:g} is exactly 0 "
                f"but the analytic gradient reaches {hidden:.2g}: the loss does not resolve "
                f"so small a step; use a larger h (near {best_h:.1g} is usually best)"
            )
        super().__init__(message)

    def __reduce__(self) -> tuple[type, tuple[int, float, float, float, float, float, str]]:
        args = self.step, self.h, self.weight_max, self.h_min, self.hidden, self.best_h
        return type(self), (*args, self.scheme)  # survives pickling


class Descent:
    """Iterate ``W <- W - lr * grad`` on ``W`` in place, one record per evaluated point.

    With ``steps=N`` it evaluates ``W_0 .. W_N`` (``N + 1`` records, ``N`` updates),
    so the last record describes the final weights; ``steps=0`` only evaluates W0.
    It stops early when the gradient norm falls below ``tol`` (``tol=0`` never),
    and raises :class:`Diverged` when the loss or gradient is not finite. With
    ``batch_size``, each record (loss, gradient, accuracy) is that of ``batch_size``
    samples drawn from ``rng`` for it (:meth:`_batch`); else of all samples.

    Exact zeros in a numerical gradient are checked, not trusted. When some entries
    are exactly 0 and either all are or ``h`` is below the scheme's limit
    (``h < scheme.h_min(W, x)``: ``W`` no longer resolves ``h``, or ``h x`` underflows),
    the analytic gradient is computed (in float64;
    the only extra pass, and only then). If, at those entries, it would have moved a
    weight (``w - lr * g != w``), or if all entries are 0 and its norm reaches
    ``tol > 0``, the zeros are an artefact of ``h`` and :class:`StepTooSmall` is
    raised: neither reported as convergence nor iterated. A genuine optimum, where
    the analytic gradient is 0 too (or too small to move any weight), goes on as
    any other point. Zeros at a resolved ``W`` among non-zero entries (blank inputs,
    saturated samples) are taken as they are.

    ``W`` is updated in place (it is the caller's array, e.g. ``SimpleNet.W``):
    after iteration it holds the final weights and :attr:`last_gradient` the
    gradient evaluated there. Everything runs in ``W``'s dtype (float32 or float64,
    ``x`` is cast to it), except the check (``check=True``): its analytic reference
    is computed in float64 from ``W`` and ``x`` cast up, so that float32's rounding
    is measured, not shared by the reference. ``scheme`` (a row of
    :data:`numgrad.schemes.SCHEMES`, central by default) is the engine's: its limit on
    h and its textbook h judge the zeros.

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
        batch_size: int | None = None,
        rng: np.random.Generator | None = None,
        scheme: Scheme = SCHEMES["central"],
    ) -> None:
        self.W, self.x, self.labels = W, np.asarray(x, dtype=working_dtype(W)), labels
        self.engine, self.h, self.lr, self.scheme = engine, h, lr, scheme
        self.steps, self.tol, self.check = steps, tol, check
        self.batch_size, self.rng = batch_size, rng
        self.stop_reason: str | None = None
        self.steps_taken = 0
        self.last_gradient: np.ndarray | None = None
        self.last_record: StepRecord | None = None

    def __iter__(self) -> Iterator[StepRecord]:
        start = time.perf_counter()
        for step in itertools.count():
            record, grad = self._evaluate(step, start)
            self.last_record, self.last_gradient = record, grad
            yield record
            if step == self.steps:
                self.stop_reason = STOP_STEPS
                return
            if self._converged(record.grad_norm):
                self.stop_reason = STOP_CONVERGED
                return
            self.W[...] = self._updated(grad)  # in place: W is the caller's array
            self.steps_taken = step + 1

    def _evaluate(self, step: int, start: float) -> tuple[StepRecord, np.ndarray]:
        x, labels = self._batch()
        with np.errstate(all="ignore"):  # non-finite values are checked just below
            loss = loss_from_labels(self.W, x, labels)
            grad = self.engine(self.W, x, labels, self.h)
        if not math.isfinite(loss):
            raise Diverged(step, "loss", loss)
        if not np.isfinite(grad).all():
            raise Diverged(step, "gradient", float(grad[~np.isfinite(grad)].flat[0]))
        weight_norm = _norm(self.W)
        if not math.isfinite(weight_norm):
            raise Diverged(step, "weight norm", weight_norm)
        reference = rel_error = None
        if self.check:
            reference = self._analytic64(x, labels)
            rel_error = relative_error(grad, reference)
        self._check_zeros(step, grad, reference, x, labels)
        record = StepRecord(
            step=step,
            loss=float(loss),
            grad_norm=_norm(grad),
            grad_max_abs=float(np.abs(grad).max()),
            weight_norm=weight_norm,
            accuracy=accuracy_from_labels(self.W, x, labels),
            grad_rel_error=rel_error,
            seconds=time.perf_counter() - start,
        )
        return record, grad

    def _batch(self) -> tuple[np.ndarray, np.ndarray]:
        """This step's samples: all of them, or ``batch_size`` rows drawn from ``rng`` with
        replacement, as the book's ``np.random.choice(train_size, batch_size)``."""
        if self.batch_size is None:
            return self.x, self.labels
        rows = self.rng.choice(len(self.labels), self.batch_size)
        return self.x[rows], self.labels[rows]

    def _converged(self, grad_norm: float) -> bool:
        return grad_norm < self.tol

    def _updated(self, grad: np.ndarray) -> np.ndarray:
        """``W - lr * grad``: the update, and the test of whether a zero hides anything."""
        # Overflow (a huge lr) and inf * 0 (an infinite one) are reported as divergence
        # at the next evaluation, not as numpy warnings in the middle of the run.
        with np.errstate(over="ignore", invalid="ignore"):
            return self.W - self.lr * grad

    def _analytic64(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The analytic gradient at ``W`` in float64 (it casts ``x`` to ``W``'s dtype)."""
        return analytic_gradient(np.asarray(self.W, dtype=np.float64), x, labels)

    def _check_zeros(
        self,
        step: int,
        grad: np.ndarray,
        reference: np.ndarray | None,
        x: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        """Raise :class:`StepTooSmall` where exact zeros in ``grad`` hide a gradient."""
        zero = grad == 0
        if not zero.any():
            return
        h_min = self.scheme.h_min(self.W, self.x)
        if not (zero.all() or self.h < h_min):
            return
        if reference is None:
            reference = self._analytic64(x, labels)
        # Would the update with the true gradient, in W's dtype, move a weight left at 0?
        moved = self._updated(reference.astype(self.W.dtype))[zero] != self.W[zero]
        # All zeros would stop the run on tol where the true gradient would not.
        false_stop = zero.all() and self._converged(0.0) and not self._converged(_norm(reference))
        if moved.any() or false_stop:
            hidden_max = float(np.abs(reference[zero]).max())
            weight_max = float(np.abs(self.W).max())
            best_h = self.scheme.textbook_h(self.W.dtype)
            raise StepTooSmall(
                step, self.h, weight_max, h_min, hidden_max, best_h, self.scheme.name
            )


def _norm(a: np.ndarray) -> float:
    """The L2 norm without overflow in the squares (weights near 1e300 still have one)."""
    largest = float(np.abs(a).max())
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    return largest * float(np.linalg.norm(a / largest))  # a Python float: inf, no warning
