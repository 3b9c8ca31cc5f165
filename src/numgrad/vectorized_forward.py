"""The vectorized forward-difference engine: ``(L(W + h e_ij) - L(W)) / h`` from one forward pass.

Shifting logit ``j`` of sample ``b`` by ``s = h x_bi`` changes its loss term by ``log rho``,
``rho = (pbar + p g) / (qbar + q g)``, ``g = e^s`` (:func:`numgrad.columns.one_sided_coefficients`),
so the forward difference of weight ``(i, j)`` is ``sum_b log rho_b / (h batch)``.

near 1, ``h max|x| <= 1``
    ``rho = 1 + (p - q) E / (1 + q E)``, ``E = expm1(s)``: one ``expm1`` per (sample, input),
    arithmetic per weight, one log per product of ratios
    (:func:`numgrad.columns.sum_log_ratios`).
wide steps, ``h max|x| > 1``
    in logarithms, ``log rho = logaddexp(log pbar, log p + s) - logaddexp(log qbar, log q + s)``,
    so that classes whose ``e`` underflows still count when a large step brings them
    back, and nothing overflows (two ``logaddexp`` per sample and weight).
"""

from __future__ import annotations

import math

import numpy as np

from numgrad.columns import (
    CHUNK_ELEMENTS,
    LIMITS,
    Ratios,
    log_sum_of_others,
    one_sided_coefficients,
    product_group,
    sum_log_ratios,
)
from numgrad.functions import CEE_DELTA
from numgrad.precision import working_dtype

# The near-1 form is used while h * max|x| is at most this (as in numgrad.vectorized).
_NEAR_ONE_HX_LIMIT = 1.0


def forward_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """The loop's forward differences for all weights at once, in ``W``'s working dtype.

    Inputs as for :func:`numgrad.gradient.loop_gradient`; memory a few MiB plus
    ``O(batch * n_classes)``.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> forward_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), h=1e-8).round(6)
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
    with np.errstate(under="ignore"):  # underflow only drops terms below the smallest normal
        if hx_max <= _NEAR_ONE_HX_LIMIT:
            _, _, q, _, p_minus_q = one_sided_coefficients(W, x, labels)
            # |log rho| <= |s|: rho lies between 1 and e^s.
            group = product_group(hx_max, LIMITS[dtype][0], per_step=1.0)
            sums = sum_log_ratios(_near_one_ratios(q, p_minus_q, x, h), x, n_classes, group)
        else:
            sums = _wide_sums(*_log_coefficients(W, x, labels), x, h)
        grad = sums.T / (h * batch)  # an entry below the smallest normal is its value
    return np.ascontiguousarray(grad)


def _near_one_ratios(q: np.ndarray, p_minus_q: np.ndarray, x: np.ndarray, h: float) -> Ratios:
    """Blocks of ``rho = 1 + (p - q) E / (1 + q E)``: exactly 1 where ``p == q``."""

    def ratios(b0: int, b1: int, i0: int, i1: int, buffers: np.ndarray) -> np.ndarray:
        _, den, ratio = buffers
        expm1 = np.expm1(h * x[b0:b1, None, i0:i1])  # e^s - 1, exact near s = 0
        np.multiply(q[b0:b1, :, None], expm1, out=den)
        den += 1.0  # 1 + q E >= 1 - q >= 0, and > 0 unless q = 1, where p = 1 too
        np.multiply(p_minus_q[b0:b1, :, None], expm1, out=ratio)
        ratio /= den
        ratio += 1.0
        return ratio

    return ratios


def _log_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``log pbar, log p, log qbar, log q``, shape (batch, n_classes), from logarithms only."""
    z = x @ W
    w = z - np.max(z, axis=1, keepdims=True)
    rows = np.arange(len(labels))
    log_total = np.log(np.sum(np.exp(w), axis=1, keepdims=True))  # S >= 1
    log_a = log_sum_of_others(w)
    log_d = math.log(CEE_DELTA)
    w_t = w[rows, labels][:, None]
    log_denom = np.logaddexp(w_t, log_d + log_total)  # log((y_t + d) S)
    log_p, log_pbar = w - log_total, log_a - log_total
    log_q = log_d + w - log_denom
    log_qbar = np.logaddexp(w_t, log_d + log_a) - log_denom
    log_q[rows, labels] = math.log1p(CEE_DELTA) + w_t[:, 0] - log_denom[:, 0]
    log_qbar[rows, labels] = log_d + log_a[rows, labels] - log_denom[:, 0]
    return log_pbar, log_p, log_qbar, log_q


def _wide_sums(
    log_pbar: np.ndarray,
    log_p: np.ndarray,
    log_qbar: np.ndarray,
    log_q: np.ndarray,
    x: np.ndarray,
    h: float,
) -> np.ndarray:
    """``out[j, i] = sum_b log rho_b(i, j)`` in logarithms, by blocks of samples and inputs."""
    batch, n_inputs = x.shape
    n_classes = log_p.shape[1]
    cols = min(n_inputs, max(1, CHUNK_ELEMENTS // n_classes))
    rows = max(1, min(batch, CHUNK_ELEMENTS // (n_classes * cols)))
    out = np.zeros((n_classes, n_inputs), dtype=x.dtype)
    for b0 in range(0, batch, rows):
        b1 = min(b0 + rows, batch)
        for i0 in range(0, n_inputs, cols):
            i1 = min(i0 + cols, n_inputs)
            s = h * x[b0:b1, None, i0:i1]
            up = np.logaddexp(log_pbar[b0:b1, :, None], log_p[b0:b1, :, None] + s)
            up -= np.logaddexp(log_qbar[b0:b1, :, None], log_q[b0:b1, :, None] + s)
            out[:, i0:i1] += np.sum(up, axis=0)
    return out
