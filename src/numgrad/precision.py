"""Floating-point precision of the core: the dtype it computes in, and the steps h it resolves.

The core computes in float64, or in float32 when the weights are float32: a
precision study, where the central difference's error over ``h`` is a V (truncation
``~h^2`` on the right, rounding ``~eps / h`` on the left) whose bottom lies near
``eps^(1/3)``: ~6e-6 in float64, ~5e-3 in float32.
"""

from __future__ import annotations

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
