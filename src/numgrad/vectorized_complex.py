"""The vectorized complex-step engine: ``Im L(W + i h e_ij) / h`` for all weights, one forward pass.

Moving ``W[i, j]`` by ``i h`` moves logit ``j`` of sample ``b`` by ``i theta``, ``theta = h x_bi``,
and its loss term by ``log rho``, ``rho = (pbar + p g) / (qbar + q g)``, ``g = e^(i theta)``
(:func:`numgrad.columns.one_sided_coefficients`: the same real coefficients as the forward
difference, a unit complex ``g``). The imaginary part of the loss is the sum of the
arguments ``arg rho_b = arg((pbar + p g) conj(qbar + q g))``: computed in complex
arithmetic (complex128 for float64, complex64 for float32), multiplied over groups of
samples, and one ``angle`` per weight and group. There is no difference of nearby
numbers: the error keeps falling with ``h`` down to where ``h x`` underflows.

Each factor's argument lies between 0 and ``theta`` (both ``pbar + p g`` and ``qbar + q g``
lie on the chord from 1 to ``g``), so a group's arguments add up to less than pi as long
as the group has fewer than ``pi / (h max|x|)`` samples; steps with ``h max|x|`` above
:data:`_ONE_BY_ONE_HX` take every sample's argument alone, as the loop's principal
logarithm does.
"""

from __future__ import annotations

import numpy as np

from numgrad.columns import MAX_PRODUCT_ROWS, Ratios, one_sided_coefficients, sum_log_ratios
from numgrad.precision import working_dtype

# The complex dtype of each working dtype.
_COMPLEX = {
    np.dtype(np.float64): np.dtype(np.complex128),
    np.dtype(np.float32): np.dtype(np.complex64),
}
# Total argument allowed per product (below pi, so that angle() does not wrap).
_ARGUMENT_BUDGET = 3.0
# Beyond this h max|x| a factor's magnitude may be far from 1: one sample per product.
_ONE_BY_ONE_HX = 1.0


def complex_step_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """The loop's complex-step derivatives for all weights at once, in ``W``'s working dtype.

    Inputs as for :func:`numgrad.gradient.loop_gradient`.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> complex_step_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), h=1e-20).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    dtype = working_dtype(W)
    W, x = np.asarray(W, dtype=dtype), np.asarray(x, dtype=dtype)
    batch, n_inputs = x.shape
    n_classes = W.shape[1]
    if batch == 0 or n_inputs == 0 or n_classes < 2:  # nothing for a weight to change
        return np.zeros(W.shape, dtype=dtype)
    hx_max = h * max(float(np.max(x)), -float(np.min(x)))
    group = MAX_PRODUCT_ROWS
    if hx_max > _ONE_BY_ONE_HX:
        group = 1
    elif hx_max > 0:  # (compared before int(): a subnormal h x makes the quotient inf)
        group = int(min(group, _ARGUMENT_BUDGET / hx_max))
    with np.errstate(under="ignore"):  # h x near the smallest normal: digits, not the sign
        ratios = _factors(*one_sided_coefficients(W, x, labels), x, h)
        arguments = sum_log_ratios(
            ratios, x, n_classes, group, dtype=_COMPLEX[dtype], reduce=np.angle
        )
        grad = arguments.T / (h * batch)  # an entry below the smallest normal is its value
    return np.ascontiguousarray(grad)


def _factors(
    p: np.ndarray,
    pbar: np.ndarray,
    q: np.ndarray,
    qbar: np.ndarray,
    p_minus_q: np.ndarray,
    x: np.ndarray,
    h: float,
) -> Ratios:
    """Blocks of ``(pbar + p g) conj(qbar + q g)``, whose argument is ``arg rho``.

    Multiplied out with ``g = cos + i sin`` and ``p + pbar = q + qbar = 1``: real part
    ``(pbar qbar + p q) + (pbar q + p qbar) cos``, imaginary part ``(p - q) sin``, written
    straight into the complex block: no product of nearby numbers is subtracted.
    """
    level, swing = pbar * qbar + p * q, pbar * q + p * qbar

    def factors(b0: int, b1: int, i0: int, i1: int, buffers: np.ndarray) -> np.ndarray:
        block = buffers[0]
        theta = h * x[b0:b1, None, i0:i1]  # cos and sin: per (sample, input), none per class
        np.multiply(swing[b0:b1, :, None], np.cos(theta), out=block.real)
        block.real += level[b0:b1, :, None]
        np.multiply(p_minus_q[b0:b1, :, None], np.sin(theta), out=block.imag)
        return block

    return factors
