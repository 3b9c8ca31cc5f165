"""Floating-point precision of the core: the dtype it computes in, and the steps h it resolves.

The core computes in float64, or in float32 when the weights are float32: a
precision study, where the central difference's error over ``h`` is a V (truncation
``~h^2`` on the right, rounding ``~eps / h`` on the left) whose bottom lies near
``eps^(1/3)``: ~6e-6 in float64, ~5e-3 in float32.
"""

from __future__ import annotations

import math

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
    return float(np.finfo(dtype).eps) ** (1 / 3)


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
