"""The vectorized central-difference engine: all of the loop's differences from one forward pass.

Perturbing ``W[i, j]`` by ``d`` changes only column ``j`` of the logits, by
``d * x[:, i]`` (the column-shift trick). So with ``e = exp(z - max z)`` from a
single forward pass, the perturbed true-class probability of every sample, for
every weight and both signs, is a rational function of ``e`` and ``exp(+-h x[b, i])``;
no further matrix products are needed.

For sample ``b`` and weight ``(i, j)`` the loss changes only through
``log(y_t + 1e-7)``, ``t = labels[b]``. Write ``u = e_j``, ``a`` = the sum of the
*other* classes' ``e`` (summed directly, not ``S - e_j``, which cancels when ``e_j``
dominates) and ``g = exp(+-h x_bi)``. Then ``y_t = e_t / (a + u g)`` for ``j != t``
and ``y_t = e_t g / (a + e_t g)`` for ``j == t``, and the ratio
``r = (y_t(-h) + 1e-7) / (y_t(+h) + 1e-7)`` simplifies in both cases to::

    r = (k + cosh(h x) + c sinh(h x)) / (k + cosh(h x) - c sinh(h x))

with ``k`` and ``c`` depending on ``(b, j)`` only. The central difference is
``sum_b log r_b / (2 h batch)``, and the sum of logs is taken as one log of the
product of the ratios, which are all near 1: one transcendental per weight and
product group instead of one per (sample, weight) pair.
"""

from __future__ import annotations

import numpy as np

from numgrad.functions import CEE_DELTA

#: The kernel is exact while ``h * max|x|`` is at most this. Its denominator
#: ``k + cosh(h x) - c sinh(h x)`` loses up to a factor ``e^(2 h |x|)`` in relative
#: accuracy to cancellation: at most ``e^2 ~ 7`` here, negligible.
FAST_HX_LIMIT = 1.0
# At most this many samples per product: each ratio lies in [e^-2, e^2] when
# h*|x| <= 1, so a product of 256 of them stays within e^+-512, far from over/underflow.
_MAX_PRODUCT_ROWS = 256
# Elements per (samples x classes x inputs) work block: 1 MiB each, three of them;
# measured fastest on 784x10 (smaller blocks pay per-call overhead, larger ones cache misses).
_CHUNK_ELEMENTS = 1 << 17


def column_shift_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """The central differences of all weights at once, for ``h * max|x| <= FAST_HX_LIMIT``.

    Work is chunked: memory is a few MiB plus ``O(batch * n_classes)``, whatever
    the size of ``W``.

    Parameters
    ----------
    W : ndarray, shape (n_inputs, n_classes)
    x : ndarray of float64, shape (batch, n_inputs), with ``h * max|x| <= 1``
    labels : ndarray of int64, shape (batch,)
    h : float
        Step of the central difference.

    Returns
    -------
    ndarray of float64, shape (n_inputs, n_classes)

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> column_shift_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), 1e-4).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    batch = x.shape[0]
    with np.errstate(under="ignore"):  # underflow only drops terms below 1e-308 of 1
        k, c = _ratio_coefficients(W, x, labels)
        log_ratios = _central_log_ratios(k, c, x, h)
    grad = log_ratios.T / (2 * h * batch)
    return np.ascontiguousarray(grad)


def _ratio_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` and ``c``, shape (batch, n_classes), of the ratio ``r`` (module docstring).

    With ``d = 1e-7``, ``e_t`` the true class, ``u = e_j``, ``a`` the others' sum:

    - ``j != t``: ``y + d = (e_t + d(a + u g)) / (a + u g)``, and multiplying out
      ``r`` (using ``g(+h) g(-h) = 1``) gives ``K = (e_t + d a) a + d u^2``,
      ``P = u (e_t + 2 d a)``, ``C = u e_t``;
    - ``j == t``: ``y + d = (d a + (1 + d) e_t g) / (a + e_t g)``, giving
      ``K = d a^2 + (1 + d) e_t^2``, ``P = (1 + 2 d) e_t a``, ``C = -e_t a``;

    and ``r = (K + P cosh + C sinh) / (K + P cosh - C sinh)``, so ``k = K/P``, ``c = C/P``
    (``|c| <= 1``). All terms are sums and products of non-negative numbers: no
    cancellation. Where ``P`` is 0 or negligible (``u`` or ``e_t`` underflowed) the
    weight cannot change this sample's loss: ``c = 0`` makes ``r = 1`` exactly.
    """
    z = x @ W
    e = np.exp(z - np.max(z, axis=1, keepdims=True))  # max shift: the largest e is 1
    others = _sum_of_others(e)
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
    # K >= 1e-7 always, so k > 1e300 means P < 1e-307: r - 1 ~ sinh(h x) / k rounds to 0.
    no_effect = ~(k <= 1e300)
    k[no_effect] = 0.0
    c[no_effect] = 0.0
    return k, c


def _sum_of_others(e: np.ndarray) -> np.ndarray:
    """``out[b, j] = sum_{m != j} e[b, m]`` as prefix + suffix sums, no subtraction."""
    before = np.zeros_like(e)
    after = np.zeros_like(e)
    np.cumsum(e[:, :-1], axis=1, out=before[:, 1:])
    after[:, :-1] = np.cumsum(e[:, :0:-1], axis=1)[:, ::-1]
    return before + after


def _central_log_ratios(k: np.ndarray, c: np.ndarray, x: np.ndarray, h: float) -> np.ndarray:
    """``out[j, i] = sum_b log r_b(i, j)``, one ``log`` per weight and product group.

    ``k``, ``c``: (batch, n_classes); ``x``: (batch, n_inputs) with ``h * |x| <= 1``.
    """
    batch, n_classes = k.shape
    n_inputs = x.shape[1]
    # Where |c sinh(h x)| < 5e-17 for every input, k + cosh >= 1 absorbs it: r is exactly
    # 1 anyway. Zeroing c there changes no bit of the result, but avoids subnormal
    # products (c reaches ~1e-300 when y_t << 1e-7), which are ~100x slower on x86.
    sinh_max = np.sinh(h * np.maximum(np.max(x, axis=1), -np.min(x, axis=1)))
    c = np.where(np.abs(c) * sinh_max[:, None] < 5e-17, 0.0, c)
    # Blocks of (rows, classes, cols) small enough to stay in cache, whole rows of
    # inputs when they fit so that numpy's inner loops are long. One preallocated
    # buffer, and no temporary of size batch x inputs: fresh large allocations cost
    # page faults that, measured, took longer than the arithmetic.
    cols = min(n_inputs, max(1, _CHUNK_ELEMENTS // n_classes))
    rows = max(1, min(batch, _CHUNK_ELEMENTS // (n_classes * cols)))
    buffer = np.empty((3, rows, n_classes, cols))
    out = np.zeros((n_classes, n_inputs))
    for g0 in range(0, batch, _MAX_PRODUCT_ROWS):
        g1 = min(g0 + _MAX_PRODUCT_ROWS, batch)
        for i0 in range(0, n_inputs, cols):
            i1 = min(i0 + cols, n_inputs)
            product = np.ones((n_classes, i1 - i0))
            for b0 in range(g0, g1, rows):
                b1 = min(b0 + rows, g1)
                base, shift, ratio = buffer[:, : b1 - b0, :, : i1 - i0]
                # exp(+-h x) enters only through cosh and sinh: batch x inputs
                # transcendentals in all, none per class.
                hx = h * x[b0:b1, None, i0:i1]
                np.add(k[b0:b1, :, None], np.cosh(hx), out=base)
                np.multiply(c[b0:b1, :, None], np.sinh(hx), out=shift)
                np.add(base, shift, out=ratio)
                np.subtract(base, shift, out=base)  # k + cosh - c sinh >= k + e^-|hx| > 0
                np.divide(ratio, base, out=ratio)  # r, within e^+-2 of 1
                product *= np.prod(ratio, axis=0)
            # Sum of logs over the group = log of the product: one log per weight.
            out[:, i0:i1] += np.log(product)
    return out
