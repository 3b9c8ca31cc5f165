"""Floating-point precision of the core: the dtype it computes in, and the steps h it resolves.

The core computes in float64, or in float32 when the weights are float32: a
precision study, where the central difference's error over ``h`` is a V (truncation
``~h^2`` on the right, rounding ``~eps / h`` on the left) whose bottom lies near
``eps^(1/3)``: ~6e-6 in float64, ~5e-3 in float32. A scheme of order ``p`` has its
bottom near ``eps^(1/(p+1))`` (:func:`textbook_h`).

Every "use h >= ..." the program prints comes from :func:`advised_h`.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

#: The dtypes the core computes in.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def working_dtype(W: np.ndarray) -> np.dtype:
    """The dtype the engines compute ``W``'s gradient in: float32 for float32, else float64.

    Examples
    --------
    >>> working_dtype(np.zeros(2, dtype=np.float32)), working_dtype(np.zeros(2, dtype=int))
    (dtype('float32'), dtype('float64'))
    """
    return DTYPES[0] if np.asarray(W).dtype == DTYPES[0] else DTYPES[1]


def best_step(dtype: np.dtype) -> float:
    """``eps^(1/3)`` of ``dtype``: about where the central difference's error is smallest.

    Examples
    --------
    >>> f"{best_step(np.float64):.1e}", f"{best_step(np.float32):.1e}"
    ('6.1e-06', '4.9e-03')
    """
    return textbook_h(dtype, 2)


def textbook_h(dtype: np.dtype, order: int) -> float:
    """``eps^(1/(order+1))`` of ``dtype``: where a difference of that order has its least error.

    Truncation ``~h^order`` meets rounding ``~eps / h`` there: ``eps^(1/2)`` for the
    forward difference, ``eps^(1/3)`` central, ``eps^(1/5)`` fourth-order.

    Examples
    --------
    >>> [f"{textbook_h(np.float64, p):.1e}" for p in (1, 2, 4)]
    ['1.5e-08', '6.1e-06', '7.4e-04']
    """
    return float(np.finfo(dtype).eps) ** (1 / (order + 1))


def advised_h(h_min: float) -> float:
    """The step to advise for the bound ``h_min``: rounded up to two significant digits.

    Rounded up, not to nearest, so that the advice is enough as printed: ``repr`` of the
    result (what every "use h >= ..." shows) reads back as the same float, which is
    ``>= h_min``. The one place that rounds advice, for every scheme and dtype.

    Examples
    --------
    >>> advised_h(5.551115123125783e-17), advised_h(2.0**-33), advised_h(3.1e-9)
    (5.6e-17, 1.2e-10, 3.1e-09)
    >>> advised_h(5e-324) >= 5e-324
    True
    """
    exact = Decimal(h_min)  # the float's exact value
    unit = Decimal(f"1e{exact.adjusted() - 1}")  # the second significant digit
    # The two-digit decimals either side of h_min: the lower one is enough when it reads
    # back as h_min itself (3.1e-9 is the float 3.1000000000000001e-9); the upper one
    # always is, since reading a decimal >= h_min back rounds to a float >= h_min.
    below = float(exact.quantize(unit, rounding=ROUND_FLOOR))
    return below if below >= h_min else float(exact.quantize(unit, rounding=ROUND_CEILING))


def smallest_resolving_h(W: np.ndarray) -> float:
    """The smallest step ``h`` for which ``w + h`` and ``w - h`` differ from ``w`` for every weight.

    Computed in ``W``'s working dtype, where the loop perturbs the weights: a smaller
    ``h`` leaves some ``w + h == w`` or ``w - h == w``, and that weight's difference
    quotient is exactly 0 (neither moves) or off by a factor of ~2 (one does),
    whatever the loss. The step is the smallest such number representable in that
    dtype (float32 rounds ``h`` to float32 before adding it); ``inf`` when a weight
    is not finite. ``W`` must not be empty.

    Examples
    --------
    >>> f"{smallest_resolving_h(np.array([[0.5, -1.0]])):.3g}"  # half of 1's spacing, 2.2e-16
    '1.11e-16'
    >>> f"{smallest_resolving_h(np.array([[0.5, -1.0]], dtype=np.float32)):.3g}"
    '5.96e-08'
    >>> smallest_resolving_h(np.zeros((2, 2)))  # any h > 0 moves 0
    5e-324
    """
    dtype = working_dtype(W)
    W = np.asarray(W, dtype=dtype)
    largest = np.max(np.abs(W))
    if not np.isfinite(largest):
        return math.inf
    if largest == 0:
        return float(np.finfo(dtype).smallest_subnormal)
    # h resolves every weight once it exceeds half the spacing of floats at the largest
    # |w|. Exactly half resolves only where rounding to even goes the right way.
    half = np.spacing(largest) / 2
    if np.all(W + half != W) and np.all(W - half != W):
        return float(half)
    return float(np.nextafter(half, dtype.type(np.inf)))


def smallest_unflowing_h(x: np.ndarray, dtype: np.dtype) -> float:
    """The smallest step ``h`` for which ``h * x`` is a normal float for every ``x != 0``.

    The complex step's limit: ``W + i h`` moves the logits by ``i h x``, and below this
    ``h`` some of those imaginary parts underflow (subnormal: digits lost; zero: the
    derivative lost). Computed as the complex step computes, in ``dtype`` (float32 rounds
    ``h`` to float32 first); the smallest positive ``dtype`` number when ``x`` is all
    zeros (any ``h > 0`` then gives the exact gradient, 0); ``inf`` when ``x`` is not finite.

    Examples
    --------
    >>> f"{smallest_unflowing_h(np.array([[0.5, -2.0]]), np.float64):.3g}"  # 2**-1022 / 0.5
    '4.45e-308'
    >>> f"{smallest_unflowing_h(np.array([[0.0, 1e-30]]), np.float32):.3g}"
    '1.18e-08'
    """
    dtype = np.dtype(dtype)
    x = np.abs(np.asarray(x, dtype=dtype))
    if not np.isfinite(x).all():
        return math.inf
    nonzero = x[x > 0]
    if nonzero.size == 0:
        return float(np.finfo(dtype).smallest_subnormal)
    least, tiny = nonzero.min(), dtype.type(np.finfo(dtype).tiny)
    # tiny / least, rounded, is within an ulp or two of the bound: look at its neighbours.
    near = [dtype.type(float(tiny) / float(least))]
    for _ in range(3):
        near = [np.nextafter(near[0], dtype.type(0)), *near, np.nextafter(near[-1], dtype.type(1))]
    return float(min(h for h in near if h * least >= tiny))
