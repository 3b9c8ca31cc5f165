"""Gradients of the loss of a linear softmax net ``z = x @ W`` with respect to ``W``.

Three engines with one signature ``engine(W, x, labels, h) -> dW`` (see :data:`ENGINES`):

``loop``
    The book's ``numerical_gradient``: perturb one weight at a time by ``+-h`` and
    recompute the whole loss, ``2 * W.size`` forward passes.
``vectorized``
    The very same central differences for all weights at once, from one forward
    pass (the column-shift trick, see :mod:`numgrad.vectorized`).
``analytic``
    The closed form of the same loss, the reference the other two approximate.

These are the book's central differences; the other schemes (forward, fourth-order,
complex step), each with a loop and a vectorized engine, are in :mod:`numgrad.schemes`.

The loss is the book's: ``mean_b -log(softmax(x_b @ W)[label_b] + 1e-7)``.

The functions here take *prepared* inputs and do not validate them (they are the hot
path): ``W`` of shape (n_inputs, n_classes), ``x`` of shape (batch, n_inputs),
``labels`` of int64 and shape (batch,), all as :meth:`numgrad.net.SimpleNet.prepare`
returns them. The engines compute in ``W``'s precision
(:func:`numgrad.precision.working_dtype`: float32 for float32 weights, float64
otherwise) and cast ``x`` to it; the gradient comes back in that dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numgrad.functions import CEE_DELTA, cross_entropy_error, softmax
from numgrad.precision import working_dtype
from numgrad.vectorized import vectorized_gradient

Engine = Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]


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
    """The book's ``SimpleNet.loss``, ``mean_b -log(softmax(x @ W)[b, labels[b]] + 1e-7)``.

    Computed in the dtype of ``x @ W`` (prepared inputs share ``W``'s), returned as a
    Python float.

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

    ``W`` itself is not modified: the perturbations happen on a copy in the working dtype.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> loop_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    w = np.asarray(W, dtype=working_dtype(W)).copy()  # C order; W itself is never perturbed
    x = np.asarray(x, dtype=w.dtype)
    return numerical_gradient(lambda v: loss_from_labels(v, x, labels), w, h)


def analytic_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Closed-form gradient of the book's loss, ``1e-7`` inside the log included.

    Per sample, ``dL/dz = y_t / (y_t + 1e-7) * (y - onehot(t))``; averaged over the
    batch, ``dL/dW = x.T @ dL/dz``.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> analytic_gradient(W, np.array([[0.6, 0.9]]), np.array([2])).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    dtype = working_dtype(W)
    W, x = np.asarray(W, dtype=dtype), np.asarray(x, dtype=dtype)
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


def _analytic_engine(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """:func:`analytic_gradient` with the engines' signature (``h`` is unused)."""
    return analytic_gradient(W, x, labels)


#: The gradient engines by name, each ``engine(W, x, labels, h) -> dW``.
ENGINES: dict[str, Engine] = {
    "vectorized": vectorized_gradient,
    "loop": loop_gradient,
    "analytic": _analytic_engine,
}
