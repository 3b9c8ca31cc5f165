"""Gradients of the loss of a linear softmax net ``z = x @ W`` with respect to ``W``.

Three engines with one signature ``engine(W, x, labels, h) -> dW`` (see :data:`ENGINES`):

``loop``
    The book's ``numerical_gradient``: perturb one weight at a time by ``+-h`` and
    recompute the whole loss, ``2 * W.size`` forward passes.
``vectorized``
    The very same central differences for all weights at once, from one forward
    pass (the column-shift trick, see :func:`vectorized_gradient`).
``analytic``
    The closed form of the same loss, the reference the other two approximate.

The loss is the book's: ``mean_b -log(softmax(x_b @ W)[label_b] + 1e-7)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numgrad.functions import CEE_DELTA, cross_entropy_error, softmax

Engine = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]

# vectorized_gradient's kernel is used while h * max|x| is at most this. Its denominator
# k + cosh(h x) - c sinh(h x) loses up to a factor e^(2 h |x|) in relative accuracy to
# cancellation: at most e^2 ~ 7 here, negligible; beyond, it falls back to the loop.
_FAST_HX_LIMIT = 1.0
# At most this many samples per product: each ratio lies in [e^-2, e^2] when
# h*|x| <= 1, so a product of 256 of them stays within e^+-512, far from over/underflow.
_MAX_PRODUCT_ROWS = 256
# Elements per (samples x classes x inputs) work block: 1 MiB each, three of them;
# measured fastest on 784x10 (smaller blocks pay per-call overhead, larger ones cache misses).
_CHUNK_ELEMENTS = 1 << 17


def numerical_gradient(
    f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4
) -> np.ndarray:
    """Central-difference gradient of ``f`` at ``x``, one element at a time (the book's loop).

    For every element ``x[idx]``: ``(f(x + h e_idx) - f(x - h e_idx)) / (2 h)``.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``. It is called with ``x`` itself, perturbed in place, and
        must compute its value *from the array it is given*. (The book's
        ``lambda w: net.loss(x, t)`` ignores its argument and only works because
        the perturbed array happens to be ``net.W``; write ``lambda w: loss(w, ...)``.)
    x : ndarray of floating dtype, any shape (0-d included)
        The point. It is modified during the call and restored bit for bit before
        returning, also when ``f`` raises.
    h : float, optional
        Step size.

    Returns
    -------
    ndarray
        The gradient, same shape and dtype as ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not a numpy array of real floating dtype: on an integer array
        ``x[idx] + h`` would be truncated back to the same integer and the
        gradient silently be 0 (the book's version does exactly that).

    Examples
    --------
    >>> x = np.array([3.0, 4.0])
    >>> numerical_gradient(lambda v: np.sum(v**2), x).round(8)
    array([6., 8.])
    >>> x
    array([3., 4.])
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"x must be a numpy array (it is perturbed in place), got {type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"x must have a real floating dtype, got {x.dtype}: x[i] + h would be "
            f"truncated to {x.dtype} and the gradient silently be wrong; "
            "pass x.astype(np.float64)"
        )
    grad = np.zeros_like(x)
    # np.ndindex visits every element of any shape (a 0-d array has the single index ()),
    # like the book's np.nditer(multi_index) loop.
    for idx in np.ndindex(x.shape):
        original = x[idx]  # a scalar copy; restore it, not (x + h) - h, which may differ
        try:
            x[idx] = original + h
            f_plus = f(x)
            x[idx] = original - h
            f_minus = f(x)
        finally:
            x[idx] = original
        # Central difference: error O(h^2), against O(h) for a one-sided difference.
        grad[idx] = (f_plus - f_minus) / (2 * h)
    return grad


def loss_from_labels(W: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
    """Loss of the linear softmax net, the book's ``SimpleNet.loss`` on prepared inputs.

    No validation (this is the hot path of the loop engine); use
    :meth:`numgrad.net.SimpleNet.prepare` to get valid inputs.

    Parameters
    ----------
    W : ndarray, shape (n_inputs, n_classes)
    x : ndarray of float64, shape (batch, n_inputs)
    labels : ndarray of int64, shape (batch,)

    Returns
    -------
    float
        ``mean_b -log(softmax(x @ W)[b, labels[b]] + 1e-7)``.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> round(loss_from_labels(W, np.array([[0.6, 0.9]]), np.array([2])), 6)  # log 3
    1.098612
    """
    return cross_entropy_error(softmax(x @ W), labels)


def accuracy_from_labels(W: np.ndarray, x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose largest logit is at their label, on prepared inputs.

    Examples
    --------
    >>> accuracy_from_labels(np.eye(2), np.array([[2.0, 1.0], [2.0, 1.0]]), np.array([0, 1]))
    0.5
    """
    return float(np.mean(np.argmax(x @ W, axis=1) == labels))


def loop_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """The seed's gradient: :func:`numerical_gradient` of the loss over a copy of ``W``.

    ``2 * W.size`` full forward passes; the reference the vectorized engine must match.

    Parameters
    ----------
    W : ndarray, shape (n_inputs, n_classes)
        Weights; not modified (the perturbations happen on a float64 copy).
    x : ndarray of float64, shape (batch, n_inputs)
    labels : ndarray of int64, shape (batch,)
    h : float, optional
        Step of the central difference.

    Returns
    -------
    ndarray of float64, shape (n_inputs, n_classes)

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> loop_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    w = np.array(W, dtype=np.float64, order="C")  # a copy: the caller's W is never perturbed
    return numerical_gradient(lambda v: loss_from_labels(v, x, labels), w, h)


def vectorized_gradient(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float = 1e-4
) -> np.ndarray:
    """The loop's central differences for all weights at once (column-shift trick).

    Perturbing ``W[i, j]`` by ``d`` changes only column ``j`` of the logits, by
    ``d * x[:, i]``. So with ``e = exp(z - max z)`` from a single forward pass, the
    perturbed true-class probability of every sample, for every weight and both
    signs, is a rational function of ``e`` and ``exp(+-h x[b, i])``; no further
    matrix products are needed. Work is chunked: memory is a few MiB plus
    ``O(batch * n_classes)``, whatever the size of ``W``.

    Parameters
    ----------
    W : ndarray, shape (n_inputs, n_classes)
    x : ndarray of float64, shape (batch, n_inputs)
    labels : ndarray of int64, shape (batch,)
    h : float, optional
        Step of the central difference.

    Returns
    -------
    ndarray of float64, shape (n_inputs, n_classes)
        Agrees with :func:`loop_gradient` to ~1e-11 at ``h = 1e-4``: that is the
        loop's own rounding noise (``~1e-16 * loss / h``); this engine's is smaller
        (measured 10-100x closer to an extended-precision central difference).

    Notes
    -----
    For sample ``b`` and weight ``(i, j)`` the loss changes only through
    ``log(y_t + 1e-7)``, ``t = labels[b]``. Write ``u = e_j``, ``a`` = the sum of the
    *other* classes' ``e`` (summed directly, not ``S - e_j``, which cancels when
    ``e_j`` dominates) and ``g = exp(+-h x_bi)``. Then ``y_t = e_t / (a + u g)``
    for ``j != t`` and ``y_t = e_t g / (a + e_t g)`` for ``j == t``. The ratio
    ``r = (y_t(-h) + 1e-7) / (y_t(+h) + 1e-7)`` simplifies in both cases to::

        r = (k + cosh(h x) + c sinh(h x)) / (k + cosh(h x) - c sinh(h x))

    with ``k`` and ``c`` depending on ``(b, j)`` only (see :func:`_ratio_coefficients`).
    The central difference is ``sum_b log r_b / (2 h batch)``, and the sum of logs
    is taken as one log of the product of the ratios, which are all near 1: one
    transcendental per weight instead of one per (sample, weight) pair.

    When ``h * max|x| > 1`` (e.g. ``h = 1e-2`` on unscaled pixel values up to 255)
    the denominator of ``r`` would lose accuracy to cancellation, and this function
    falls back to :func:`loop_gradient`: correct, but as slow as the loop.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> vectorized_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    batch, n_inputs = x.shape
    if n_inputs == 0 or batch == 0:
        return np.zeros(np.shape(W), dtype=np.float64)
    hx_max = h * max(float(np.max(x)), -float(np.min(x)))  # h max|x|, without a temporary
    if not hx_max <= _FAST_HX_LIMIT:  # also catches nan
        return loop_gradient(W, x, labels, h)
    with np.errstate(under="ignore"):  # underflow only drops terms below 1e-308 of 1
        k, c = _ratio_coefficients(W, x, labels)
        log_ratios = _central_log_ratios(k, c, x, h)
    grad = log_ratios.T / (2 * h * batch)
    return np.ascontiguousarray(grad)


def _ratio_coefficients(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` and ``c``, shape (batch, n_classes), of the ratio in :func:`vectorized_gradient`.

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


def analytic_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Closed-form gradient of the book's loss, ``1e-7`` inside the log included.

    Per sample, ``dL/dz = y_t / (y_t + 1e-7) * (y - onehot(t))``; averaged over the
    batch, ``dL/dW = x.T @ dL/dz``.

    Parameters
    ----------
    W : ndarray, shape (n_inputs, n_classes)
    x : ndarray of float64, shape (batch, n_inputs)
    labels : ndarray of int64, shape (batch,)

    Returns
    -------
    ndarray of float64, shape (n_inputs, n_classes)

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> analytic_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    batch = x.shape[0]
    rows = np.arange(batch)
    with np.errstate(under="ignore"):  # tiny probabilities times tiny factors -> 0 is fine
        y = softmax(x @ W)
        y_t = y[rows, labels]
        # d/dz of -log(y_t + d) is y_t/(y_t + d) * (y - onehot): the 1e-7 damps the
        # gradient of samples whose true class is (nearly) impossible.
        dz = y.copy()
        dz[rows, labels] -= 1.0
        dz *= (y_t / (y_t + CEE_DELTA) / batch)[:, None]
        return x.T @ dz


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Relative error ``||a - b|| / (||a|| + ||b||)`` of two gradients (2-norms).

    The usual gradient-check measure: scale free, symmetric, between 0 (equal) and
    1 (e.g. ``b = -a``); 0.0 when both are zero. For float64 central differences
    of a smooth loss, about ``1e-7`` or below means the gradients agree, ``1e-4``
    is suspicious and ``1e-2`` or above means one of them is wrong.

    Parameters
    ----------
    a, b : array_like
        Arrays of the same shape.

    Returns
    -------
    float

    Examples
    --------
    >>> relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    0.0
    >>> relative_error(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))
    1.0
    >>> relative_error(np.zeros(3), np.zeros(3))
    0.0
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = float(np.linalg.norm(a) + np.linalg.norm(b))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b)) / scale


def _analytic_engine(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float = 1e-4
) -> np.ndarray:
    """:func:`analytic_gradient` with the engines' signature (``h`` is unused)."""
    return analytic_gradient(W, x, labels)


#: The gradient engines by name, each ``engine(W, x, labels, h) -> dW``.
ENGINES: dict[str, Engine] = {
    "vectorized": vectorized_gradient,
    "loop": loop_gradient,
    "analytic": _analytic_engine,
}
