"""Softmax and cross-entropy error, as defined in the book's ``common/functions.py``.

These are the seed's definitions, kept numerically identical (the ``+ 1e-7``
inside the log included) so that the book's printed numbers reproduce. Both also take
complex input, for the complex-step derivative ``Im L(W + i h) / h``: the formulas are
analytic, so the same code differentiates itself.
"""

from __future__ import annotations

import numpy as np

#: Added to the true-class probability inside the log, exactly as the book does, so
#: that a probability of 0 gives a finite loss (``-log(1e-7) ~ 16.1``), not ``inf``.
CEE_DELTA = 1e-7


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of a vector, or of each row of a matrix.

    Parameters
    ----------
    x : array_like, shape (n_classes,) or (batch, n_classes)
        Logits, real or complex.

    Returns
    -------
    ndarray
        Probabilities of the same shape; each row sums to 1.

    Notes
    -----
    The row maximum is subtracted before ``exp`` so that logits such as
    ``1e4`` stay finite (softmax is invariant to a shift of the row).
    ``exp`` of very negative shifted logits underflows to 0: that is the
    intended result, so the underflow is silenced locally and callers running
    under ``np.errstate(all="raise")`` are not interrupted.

    Examples
    --------
    >>> softmax(np.array([0.3, 2.9, 4.0])).round(4)
    array([0.0182, 0.2452, 0.7366])
    >>> softmax(np.array([[1e4, -1e4], [0.0, 0.0]]))
    array([[1. , 0. ],
           [0.5, 0.5]])
    >>> softmax(np.array([0.0, 1e-20j])).imag  # d/dz: y (onehot - y) times 1e-20
    array([-2.5e-21,  2.5e-21])
    """
    x = np.asarray(x)
    # Shift by the row max: the largest exponent becomes exp(0) = 1, so no overflow.
    # (x.real is x itself for real input: the same operation, bit for bit.)
    shifted = x - np.max(x.real, axis=-1, keepdims=True)
    with np.errstate(under="ignore"):  # exp(-huge) -> 0 is the right answer here
        e = np.exp(shifted)
        return e / np.sum(e, axis=-1, keepdims=True)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float | complex:
    """Mean cross-entropy error of a batch, the book's definition exactly.

    ``-sum(log(y[b, t_b] + 1e-7)) / batch``.

    Parameters
    ----------
    y : array_like, shape (n_classes,) or (batch, n_classes)
        Predicted probabilities (e.g. the output of :func:`softmax`), real or complex.
        A 1-D ``y`` is one sample, treated as a batch of one as in the book.
    t : array_like
        Targets: one-hot rows of the same shape as ``y``, or integer class
        labels (shape ``(batch,)``, or a scalar / length-1 array for one sample).

    Returns
    -------
    float or complex
        The loss averaged over the batch; complex for complex ``y`` (its imaginary
        part is what the complex step needs: a cast to float would drop it).

    Notes
    -----
    The book tells one-hot from labels by ``t.size == y.size``; here ``t`` is one-hot
    when its shape equals ``y``'s, which agrees with the book on every input it
    accepts and also handles a single class (where one label per sample has the
    same size as ``y``).

    Examples
    --------
    >>> y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    >>> t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    >>> round(cross_entropy_error(y, t), 6)
    0.510825
    >>> round(cross_entropy_error(y, 2), 6)  # the same target as a label
    0.510825
    >>> f"{cross_entropy_error(np.array([0.5 + 1e-20j, 0.5 - 1e-20j]), 0).imag:.6g}"
    '-2e-20'
    """
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:  # one sample: a batch of one, as the book does
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.shape == y.shape:  # one-hot rows -> index of the 1 in each row
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    # The 1e-7 keeps log finite when the true class has probability 0 (see CEE_DELTA).
    # (Complex y only: the log's imaginary part, an angle, may underflow to 0 when the
    # complex step's h is tiny; that is its right value, as softmax's exp underflow is.)
    with np.errstate(under="ignore"):
        loss = -np.sum(np.log(y[np.arange(batch_size), t] + CEE_DELTA)) / batch_size
    return complex(loss) if np.iscomplexobj(loss) else float(loss)
