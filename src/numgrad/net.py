"""``SimpleNet``: the book's one-layer net ``z = x @ W`` with softmax and cross-entropy.

The class validates and normalizes inputs once (:meth:`SimpleNet.prepare`, with
:mod:`numgrad.inputs`) and then delegates to the pure functions of
:mod:`numgrad.gradient`, which assume valid input. Invalid input raises
:class:`InputError`, whose ``input`` names the input to fix.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from numgrad.gradient import ENGINES, accuracy_from_labels, loss_from_labels
from numgrad.inputs import InputError, as_labels, as_samples, as_weights

__all__ = ["InputError", "SimpleNet"]

# Below this many weights, __repr__ prints W itself; above, summary statistics.
_REPR_MAX_WEIGHTS = 12


class SimpleNet:
    """A linear softmax classifier ``softmax(x @ W)`` with the book's cross-entropy loss.

    Parameters
    ----------
    W : array_like, shape (n_inputs, n_classes)
        Initial weights: finite real numbers, 2-D, non-empty. Copied to a fresh
        C-contiguous array, :attr:`W`, which gradient descent may update in place.
    dtype : {numpy.float64, numpy.float32}, optional
        The precision of :attr:`W` and of everything computed from it: inputs are
        cast to it, every engine and the loss compute in it. float32 is for studying
        rounding (see :mod:`numgrad.precision`); float64 is the book's.

    Raises
    ------
    InputError
        If ``W`` is not a finite 2-D array of real numbers with at least one row and
        two columns (see :func:`numgrad.inputs.as_weights`).

    Examples
    --------
    >>> net = SimpleNet([[0.47355232, 0.9977393, 0.84668094],
    ...                  [0.85557411, 0.03563661, 0.69422093]])
    >>> x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    >>> net.predict(x).round(8)
    array([1.05414809, 0.63071653, 1.1328074 ])
    >>> round(net.loss(x, t), 6)
    0.928068
    >>> net.gradient(x, t).round(6)
    array([[ 0.219248,  0.143562, -0.36281 ],
           [ 0.328871,  0.215344, -0.544215]])
    """

    def __init__(self, W: np.ndarray, dtype: np.dtype = np.float64) -> None:
        self.W = as_weights(W, dtype)

    @classmethod
    def random(
        cls,
        shape: tuple[int, int],
        rng: np.random.Generator,
        scale: float = 1.0,
        dtype: np.dtype = np.float64,
    ) -> SimpleNet:
        """A net with standard-normal weights times ``scale``, drawn from ``rng``.

        ``shape`` is ``(n_inputs, n_classes)``: positive integers, at least 2 classes
        (else :class:`InputError` with ``input="shape"``);
        ``rng`` the only source of randomness (never numpy's global one; else TypeError);
        ``scale`` a finite number (else ValueError). Drawn in float64, then cast to
        ``dtype``: the same seed gives the same weights, rounded, in float32.

        Examples
        --------
        >>> net = SimpleNet.random((2, 3), np.random.default_rng(0), scale=0.01)
        >>> net.shape
        (2, 3)
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
                f"got {type(rng).__name__}"
            )
        shape = tuple(shape) if isinstance(shape, tuple | list) else (shape,)
        if len(shape) != 2 or not all(
            isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0 for n in shape
        ):
            raise InputError(
                f"shape must be two positive integers (n_inputs, n_classes), got {shape}", "shape"
            )
        if not (isinstance(scale, Real) and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite real number, got {scale!r}")
        return cls(rng.standard_normal(shape) * scale, dtype)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_inputs, n_classes)``, the shape of ``W``."""
        return self.W.shape

    def prepare(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate inputs and targets and bring them to the engines' form.

        Parameters
        ----------
        x : array_like, shape (n_inputs,) or (batch, n_inputs)
            Inputs; a 1-D ``x`` is one sample. Finite real numbers.
        t : array_like
            Targets, either integer class labels (shape ``(batch,)``; a scalar for
            one sample) or one-hot rows (shape ``(batch, n_classes)``; a 1-D row of
            length ``n_classes`` when ``x`` is 1-D).

        Returns
        -------
        x2d : ndarray of ``W``'s dtype, shape (batch, n_inputs), C-contiguous
        labels : ndarray of int64, shape (batch,)

        Raises
        ------
        InputError
            With a message naming the problem and the numbers involved, and
            ``input`` naming the input to fix.

        Examples
        --------
        >>> net = SimpleNet(np.zeros((2, 3)))
        >>> x2d, labels = net.prepare([0.6, 0.9], [0, 0, 1])
        >>> x2d, labels
        (array([[0.6, 0.9]]), array([2]))
        """
        x2d, single = as_samples(x, self.W.shape[0], self.W.dtype)
        labels = as_labels(t, self.W.shape[1], single)
        if len(labels) != len(x2d):
            raise InputError(
                f"x has {len(x2d)} samples (rows) but t has {len(labels)}: they must be the same",
                "t",
            )
        return x2d, labels

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits ``x @ W``: shape (n_classes,) for one sample, (batch, n_classes) else.

        Examples
        --------
        >>> SimpleNet([[1.0, 0.0], [0.0, 2.0]]).predict([3.0, 4.0])
        array([3., 8.])
        """
        x2d, single = as_samples(x, self.W.shape[0], self.W.dtype)
        z = x2d @ self.W
        return z[0] if single else z

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        """The book's loss: mean of ``-log(softmax(x @ W)[label] + 1e-7)``.

        Examples
        --------
        >>> round(SimpleNet(np.zeros((2, 3))).loss([0.6, 0.9], 2), 6)  # log 3
        1.098612
        """
        return loss_from_labels(self.W, *self.prepare(x, t))

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        """Fraction of samples whose largest logit is the true class.

        Examples
        --------
        >>> SimpleNet([[1.0, 0.0], [0.0, 1.0]]).accuracy([[2.0, 1.0], [2.0, 1.0]], [0, 1])
        0.5
        """
        return accuracy_from_labels(self.W, *self.prepare(x, t))

    def gradient(
        self, x: np.ndarray, t: np.ndarray, method: str = "vectorized", h: float = 1e-4
    ) -> np.ndarray:
        """Gradient of :meth:`loss` with respect to ``W``.

        ``x``, ``t`` as in :meth:`prepare`; ``method`` one of
        :data:`numgrad.gradient.ENGINES`; ``h`` the step of the central differences, a
        finite number > 0 (unused by "analytic"). Returns an array of ``W``'s shape and
        leaves ``W`` unchanged. Raises ValueError for an unknown method, a bad ``h`` or
        invalid inputs.

        Examples
        --------
        >>> net = SimpleNet(np.zeros((2, 3)))
        >>> net.gradient([0.6, 0.9], 2, method="analytic").round(6)
        array([[ 0.2,  0.2, -0.4],
               [ 0.3,  0.3, -0.6]])
        """
        if method not in ENGINES:
            choices = ", ".join(repr(name) for name in ENGINES)
            raise ValueError(f"unknown gradient method {method!r}; choose one of {choices}")
        if isinstance(h, bool) or not isinstance(h, Real) or not (math.isfinite(h) and h > 0):
            raise ValueError(f"h must be a finite number > 0, got {h!r}")
        x2d, labels = self.prepare(x, t)
        return ENGINES[method](self.W, x2d, labels, float(h))

    def __repr__(self) -> str:
        head = f"SimpleNet(shape={self.shape}, dtype={self.W.dtype}"
        if self.W.size <= _REPR_MAX_WEIGHTS:
            weights = np.array2string(self.W, precision=4, separator=", ").replace("\n", "")
            return f"{head}, W={weights})"
        return (
            f"{head}, W: mean={self.W.mean():.4g}, std={self.W.std():.4g}, "
            f"min={self.W.min():.4g}, max={self.W.max():.4g})"
        )
