"""The vectorized central-difference engine: all of the loop's differences from one forward pass.

Perturbing ``W[i, j]`` by ``d`` changes only column ``j`` of the logits, by ``d * x[:, i]``
(the column-shift trick): from ``e = exp(z - max z)`` of one forward pass, the perturbed
true-class probability of every sample, weight and sign is a rational function of ``e``
and ``exp(+-h x[b, i])``, with no further matrix products.

For sample ``b`` and weight ``(i, j)`` the loss changes only through ``log(y_t + 1e-7)``,
``t = labels[b]``. With ``u = e_j``, ``a`` the sum of the *other* classes' ``e`` and
``g = exp(+-h x_bi)``: ``y_t = e_t / (a + u g)`` for ``j != t``, ``y_t = e_t g / (a + e_t g)``
for ``j == t``, and in both cases the ratio ``r = (y_t(-h) + 1e-7) / (y_t(+h) + 1e-7)`` is::

    r = (k + cosh(s) + c sinh(s)) / (k + cosh(s) - c sinh(s)),    s = h x_bi,

with ``k`` and ``c`` depending on ``(b, j)`` only. The central difference is
``sum_b log r_b / (2 h batch)``, taken as one log of a product of ratios: one
transcendental per weight and product group, not one per (sample, weight) pair.

Two evaluations of ``r``, both exact to rounding:

near 1, ``h max|x| <= 1``
    as written; the denominator cancels, losing up to a factor ``e^(2|s|) <= e^2``.
wide steps, ``h max|x| > 1``
    with ``alpha = (1 - c) / 2``, ``beta = (1 + c) / 2``, ``G = exp(-|s|)``:
    ``r = (beta + k G + alpha G^2) / (alpha + k G + beta G^2)`` for ``s >= 0`` (the
    inverse for ``s < 0``), sums of non-negative terms at any step. ``alpha``, ``beta``
    and ``log k`` come from logarithms, so classes whose ``e`` underflows still count
    when a large step brings them back; ``k G = exp(log k - |s|)``, one exp per
    (sample, weight): about twice the near-1 form's work.
"""

from __future__ import annotations

import math

import numpy as np

from numgrad.columns import (
    LIMITS,
    Ratios,
    log_sum_of_others,
    product_group,
    sum_log_ratios,
    sum_of_others,
)
from numgrad.functions import CEE_DELTA
from numgrad.precision import working_dtype

# The near-1 form is used while h * max|x| is at most this (see the module docstring).
_NEAR_ONE_HX_LIMIT = 1.0


def vectorized_gradient(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float = 1e-4
) -> np.ndarray:
    """The loop's central differences for all weights at once (column-shift trick).

    One forward pass instead of the loop's ``2 * W.size``, for any step ``h``; work
    is chunked, so memory is a few MiB plus ``O(batch * n_classes)`` whatever the
    size of ``W``. Inputs as for :func:`numgrad.gradient.loop_gradient`.

    The result agrees with :func:`numgrad.gradient.loop_gradient` to its rounding
    noise (``~1e-16 * loss / h``, ~1e-11 at ``h = 1e-4``); this engine's own is
    smaller (measured 10-100x closer to an extended-precision central difference).

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> vectorized_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    >>> vectorized_gradient(W, np.array([[6.0, 9.0]]), np.array([2]), h=0.5).round(6)  # wide
    array([[ 2.377185,  2.377185, -3.622809],
           [ 3.823279,  3.823279, -5.176694]])
    """
    dtype = working_dtype(W)
    W, x = np.asarray(W, dtype=dtype), np.asarray(x, dtype=dtype)
    log_range, no_effect = LIMITS[dtype]
    batch, n_inputs = x.shape
    n_classes = W.shape[1]
    if batch == 0 or n_inputs == 0 or n_classes < 2:  # nothing for a weight to change
        return np.zeros(W.shape, dtype=dtype)
    hx_max = h * max(float(np.max(x)), -float(np.min(x)))  # h max|x|, without a temporary
    group = product_group(hx_max, log_range)  # |log r| <= 2 h max|x|
    with np.errstate(under="ignore"):  # underflow only drops terms below the smallest normal
        if hx_max <= _NEAR_ONE_HX_LIMIT:
            k, c = _ratio_coefficients(W, x, labels, no_effect)
            ratios = _near_one_ratios(k, c, x, h)
        else:
            ratios = _wide_ratios(*_wide_coefficients(W, x, labels), x, h, log_range)
        log_ratios = sum_log_ratios(ratios, x, n_classes, group)
    return np.ascontiguousarray(log_ratios.T / (2 * h * batch))


def _ratio_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, no_effect: float
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` and ``c``, shape (batch, n_classes), of the ratio ``r`` (module docstring).

    With ``d = 1e-7``, multiplying out ``r`` (using ``g(+h) g(-h) = 1``) gives
    ``r = (K + P cosh + C sinh) / (K + P cosh - C sinh)``, ``k = K/P``, ``c = C/P``, with

    - ``j != t``: ``K = (e_t + d a) a + d u^2``, ``P = u (e_t + 2 d a)``, ``C = u e_t``;
    - ``j == t``: ``K = d a^2 + (1 + d) e_t^2``, ``P = (1 + 2 d) e_t a``, ``C = -e_t a``;

    sums and products of non-negative numbers: no cancellation, ``|c| <= 1``. Where
    ``P`` is 0 or negligible (``u`` or ``e_t`` underflowed; ``K >= 1e-7`` always) the
    weight cannot change this sample's loss: ``c = 0`` makes ``r = 1`` exactly.
    """
    z = x @ W
    e = np.exp(z - np.max(z, axis=1, keepdims=True))  # max shift: the largest e is 1
    others = sum_of_others(e)
    rows = np.arange(len(labels))
    e_t = e[rows, labels][:, None]
    d = CEE_DELTA
    big_k = (e_t + d * others) * others + d * e * e
    big_p = e * (e_t + 2 * d * others)
    big_c = e * e_t
    # The true class's own column (j == t): the perturbation moves y_t directly.
    a_t, et = others[rows, labels], e_t[:, 0]
    big_k[rows, labels] = d * a_t * a_t + (1 + d) * et * et
    big_p[rows, labels] = (1 + 2 * d) * et * a_t
    big_c[rows, labels] = -et * a_t
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        k = big_k / big_p
        c = big_c / big_p
    unchanged = ~(k <= no_effect)  # r - 1 ~ sinh(h x) / k rounds to 0 (nan: P = 0)
    k[unchanged] = 0.0
    c[unchanged] = 0.0
    return k, c


def _wide_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``alpha``, ``beta`` and ``log k``, shape (batch, n_classes), for wide steps.

    From logarithms, so that nothing underflows: ``rho = u / a`` (``e^+-1000`` when
    one class dominates; ``a`` of the top class is summed relative to the second
    largest logit), and for ``j != t`` with ``q = e_t / (d a)`` (``<= 1/d``):
    ``alpha = 1``, ``beta = q + 1``; for ``j == t``: ``alpha = 1 + d``, ``beta = d``; in
    both, ``k = alpha rho + beta / rho``. (These are the docstring's values times
    ``q + 2`` and ``1 + 2 d``: ``r`` depends on their ratios only.)
    """
    z = x @ W
    w = z - np.max(z, axis=1, keepdims=True)
    rows = np.arange(len(labels))
    log_a = log_sum_of_others(w)
    log_rho = w - log_a
    d = CEE_DELTA
    with np.errstate(over="ignore"):  # j == t may overflow; replaced below
        beta = np.exp(w[rows, labels][:, None] - log_a - math.log(d)) + 1  # q + 1
    alpha = np.ones_like(beta)
    alpha[rows, labels] = 1 + d
    beta[rows, labels] = d
    # log(alpha rho + beta / rho) as a log-sum-exp: rho itself may not be representable.
    up, down = np.log(alpha) + log_rho, np.log(beta) - log_rho
    log_k = np.maximum(up, down) + np.log1p(np.exp(-np.abs(up - down)))
    return alpha, beta, log_k


def _near_one_ratios(k: np.ndarray, c: np.ndarray, x: np.ndarray, h: float) -> Ratios:
    """Blocks of ``r = (k + cosh + c sinh) / (k + cosh - c sinh)``, for ``h |x| <= 1``."""

    def ratios(b0: int, b1: int, i0: int, i1: int, buffers: np.ndarray) -> np.ndarray:
        base, shift, ratio = buffers
        # exp(+-h x) enters only through cosh and sinh: batch x inputs
        # transcendentals in all, none per class.
        hx = h * x[b0:b1, None, i0:i1]
        np.add(k[b0:b1, :, None], np.cosh(hx), out=base)
        np.multiply(c[b0:b1, :, None], np.sinh(hx), out=shift)
        np.add(base, shift, out=ratio)
        np.subtract(base, shift, out=base)  # k + cosh - c sinh >= k + e^-|hx| > 0
        np.divide(ratio, base, out=ratio)
        return ratio

    return ratios


def _wide_ratios(
    alpha: np.ndarray, beta: np.ndarray, log_k: np.ndarray, x: np.ndarray, h: float, clip: float
) -> Ratios:
    """Blocks of ``r`` for any step, from sums of non-negative terms only."""

    def ratios(b0: int, b1: int, i0: int, i1: int, buffers: np.ndarray) -> np.ndarray:
        kg, num, den = buffers
        hx = h * x[b0:b1, None, i0:i1]
        # s >= 0: num = kG + alpha G^2 + beta, den = kG + alpha + beta G^2; s < 0 swaps
        # them: u = G^2 and v = 1 where s >= 0, u = 1 and v = G^2 where s < 0.
        u, v = np.exp(-2 * np.maximum(hx, 0)), np.exp(2 * np.minimum(hx, 0))
        a, b = alpha[b0:b1, :, None], beta[b0:b1, :, None]
        np.subtract(log_k[b0:b1, :, None], np.abs(hx), out=kg)
        # Beyond e^clip, kG makes r 1 to within e^-clip: clip instead of overflowing.
        np.minimum(kg, clip, out=kg)
        np.exp(kg, out=kg)
        np.multiply(a, u, out=num)
        num += kg
        np.multiply(b, v, out=den)
        num += den
        np.multiply(a, v, out=den)
        den += kg
        np.multiply(b, u, out=kg)
        den += kg
        np.divide(num, den, out=num)
        return num

    return ratios
