"""The column-shift trick's shared pieces: sums over the other classes, products of ratios.

Perturbing ``W[i, j]`` by ``d`` changes only column ``j`` of the logits, by ``d * x[:, i]``.
Every vectorized scheme writes its perturbed losses as, per sample, the log (or, for the
complex step, the argument) of a ratio built from one forward pass; summing them over
the batch is a product of ratios, one log per weight and group of samples
(:func:`sum_log_ratios`). The per-scheme ratios: :mod:`numgrad.vectorized` (central),
:mod:`numgrad.vectorized_forward`, :mod:`numgrad.vectorized_complex`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numgrad.functions import CEE_DELTA

# A ratio lies within e^+-2h|x| and, since y_t + 1e-7 is in [1e-7, 1 + 1e-7], within
# e^+-MAX_LOG_RATIO. Per working dtype, products of ratios are kept within e^+-log_range
# (overflow: e^709, e^88): 256 ratios per product near 1 and 43 for the widest steps in
# float64, 40 and 4 in float32. A k above `no_effect` leaves r = 1 (r - 1 ~ 1/k << eps).
MAX_LOG_RATIO = 16.2
MAX_PRODUCT_ROWS = 256
LIMITS = {  # dtype: (log_range, no_effect)
    np.dtype(np.float64): (700.0, 1e300),
    np.dtype(np.float32): (80.0, 1e30),
}
# Elements per (samples x classes x inputs) work block: 1 MiB each, three of them;
# measured fastest on 784x10 (smaller blocks pay per-call overhead, larger ones cache misses).
CHUNK_ELEMENTS = 1 << 17

# A block of ratios: (b0, b1, i0, i1, three work buffers) -> r for those samples and inputs.
Ratios = Callable[[int, int, int, int, np.ndarray], np.ndarray]


def product_group(hx_max: float, log_range: float, per_step: float = 2.0) -> int:
    """Samples per product: ``|log r| <= min(per_step * h max|x|, MAX_LOG_RATIO)`` each.

    Examples
    --------
    >>> product_group(1e-4, 700.0), product_group(1.0, 700.0), product_group(100.0, 80.0)
    (256, 256, 4)
    >>> product_group(5e-324, 700.0)  # a subnormal step: log_range / widest is inf
    256
    """
    widest = min(per_step * hx_max, MAX_LOG_RATIO)  # bound on |log r|
    if widest > 0:  # (compared before int(): a subnormal widest makes the quotient inf)
        return int(min(MAX_PRODUCT_ROWS, log_range / widest))
    return MAX_PRODUCT_ROWS


def sum_of_others(e: np.ndarray) -> np.ndarray:
    """``out[b, j] = sum_{m != j} e[b, m]`` as prefix + suffix sums, no subtraction.

    Examples
    --------
    >>> sum_of_others(np.array([[1.0, 2.0, 4.0]]))
    array([[6., 5., 3.]])
    """
    before = np.zeros_like(e)
    after = np.zeros_like(e)
    np.cumsum(e[:, :-1], axis=1, out=before[:, 1:])
    after[:, :-1] = np.cumsum(e[:, :0:-1], axis=1)[:, ::-1]
    return before + after


def log_sum_of_others(w: np.ndarray) -> np.ndarray:
    """``log sum_{m != j} exp(w[b, m])`` for max-shifted logits ``w`` (row max 0), no underflow.

    Only the top class's sum may underflow to 0 (the others include ``exp(0) = 1``):
    it is summed relative to the second largest logit.

    Examples
    --------
    >>> np.exp(log_sum_of_others(np.array([[0.0, -1000.0, -1001.0]]))[0, 0] + 1000.0).round(6)
    np.float64(1.367879)
    """
    rows = np.arange(w.shape[0])
    top = np.argmax(w, axis=1)
    with np.errstate(divide="ignore"):  # only the top class's sum may underflow to 0 ...
        log_a = np.log(sum_of_others(np.exp(w)))
    rest = w.copy()
    rest[rows, top] = -np.inf
    second = np.max(rest, axis=1)
    # ... so sum the others of the top class relative to the second largest logit.
    log_a[rows, top] = second + np.log(np.sum(np.exp(rest - second[:, None]), axis=1))
    return log_a


def sum_log_ratios(
    ratios: Ratios,
    x: np.ndarray,
    n_classes: int,
    group: int,
    *,
    dtype: np.dtype | None = None,
    reduce: Callable[[np.ndarray], np.ndarray] = np.log,
) -> np.ndarray:
    """``out[j, i] = sum_b log r_b(i, j)``, one ``log`` per weight and group of samples.

    ``dtype`` is the ratios' (``x``'s unless given: complex for the complex step), and
    ``reduce`` turns a product into the sum of its factors' logs (``np.angle`` sums
    the arguments of complex factors, when each group's total stays within +-pi).
    """
    batch, n_inputs = x.shape
    dtype = x.dtype if dtype is None else dtype
    # Blocks of (rows, classes, cols) small enough to stay in cache, whole rows of
    # inputs when they fit so that numpy's inner loops are long. One preallocated
    # buffer, and no temporary of size batch x inputs: fresh large allocations cost
    # page faults that, measured, took longer than the arithmetic.
    cols = min(n_inputs, max(1, CHUNK_ELEMENTS // n_classes))
    rows = max(1, min(batch, CHUNK_ELEMENTS // (n_classes * cols)))
    buffer = np.empty((3, rows, n_classes, cols), dtype=dtype)
    out = np.zeros((n_classes, n_inputs), dtype=x.dtype)
    for g0 in range(0, batch, group):
        g1 = min(g0 + group, batch)
        for i0 in range(0, n_inputs, cols):
            i1 = min(i0 + cols, n_inputs)
            product = np.ones((n_classes, i1 - i0), dtype=dtype)
            for b0 in range(g0, g1, rows):
                b1 = min(b0 + rows, g1)
                block = ratios(b0, b1, i0, i1, buffer[:, : b1 - b0, :, : i1 - i0])
                product *= np.prod(block, axis=0)
            # Sum of logs over the group = log of the product: one log per weight.
            out[:, i0:i1] += reduce(product)
    return out


def one_sided_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``p, pbar, q, qbar, p - q``, shape (batch, n_classes), of one forward pass.

    Shifting logit ``j`` of sample ``b`` by ``s`` (``g = exp(s)``, real or complex)
    changes its loss term ``-log(y_t + 1e-7)`` by ``log rho``, with
    ``rho = (pbar + p g) / (qbar + q g)``, ``p + pbar = q + qbar = 1``, all four in
    [0, 1]: ``p = y_j``, and with ``d = 1e-7``, ``q = d y_j / (y_t + d)`` for ``j != t``,
    ``q = (1 + d) y_t / (y_t + d)`` for ``j == t``. Each comes from ``e = exp(z - max z)``,
    ``S = sum e`` and the sums of the other classes, as quotients of non-negative sums:
    no cancellation, also for ``1 - p`` and ``p - q`` (where ``y_j ~ 1`` or ``y_t << d``).

    Examples
    --------
    >>> p, pbar, q, qbar, m = one_sided_coefficients(np.zeros((1, 2)), np.ones((1, 1)), [0])
    >>> p, q.round(6), m.round(6)  # the true class: q = 1; the other: q ~ 2e-7
    (array([[0.5, 0.5]]), array([[1., 0.]]), array([[-0.5,  0.5]]))
    """
    z = x @ W
    with np.errstate(under="ignore"):  # exp(-huge) -> 0: that class cannot matter here
        e = np.exp(z - np.max(z, axis=1, keepdims=True))  # max shift: the largest e is 1
        total = np.sum(e, axis=1, keepdims=True)  # S >= 1
        others = sum_of_others(e)
        rows = np.arange(len(labels))
        e_t = e[rows, labels][:, None]
        d = CEE_DELTA
        denom = e_t + d * total  # (y_t + d) S
        p, pbar = e / total, others / total
        q, qbar = d * e / denom, (e_t + d * others) / denom
        p_minus_q = e * e_t / (total * denom)
        # The true class's own column (j == t): the shift moves y_t directly.
        a_t, et, den_t = others[rows, labels], e_t[:, 0], denom[:, 0]
        q[rows, labels] = (1 + d) * et / den_t
        qbar[rows, labels] = d * a_t / den_t
        p_minus_q[rows, labels] = -et * a_t / (total[:, 0] * den_t)
    return p, pbar, q, qbar, p_minus_q
