"""The finite-difference schemes by name: each one's loop and vectorized engine, its limit on h.

``gradient.scheme`` picks a row of :data:`SCHEMES`; nothing else in the program asks which
scheme it runs. Each row gives the loop engine (the book's way, one weight at a time:
perturb, evaluate the loss, restore; the reference), the vectorized engine (the same
quotients from one forward pass), the order of its truncation error, and its limit on h:

``central`` (the book's, the default)
    ``(L(W + h) - L(W - h)) / 2h``, error ``O(h^2)``.
``forward``
    ``(L(W + h) - L(W)) / h``, error ``O(h)``.
``central4``
    ``(-L(W + 2h) + 8 L(W + h) - 8 L(W - h) + L(W - 2h)) / 12h``, error ``O(h^4)``.
``complex``
    the complex step ``Im L(W + i h) / h``, error ``O(h^2)`` and no difference of nearby
    numbers: h can be tiny (1e-20 is fine), down to where ``h x`` underflows.

The real steps need ``w +- h != w`` (:func:`numgrad.precision.smallest_resolving_h`), the
complex step ``h x`` normal (:func:`numgrad.precision.smallest_unflowing_h`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from numgrad.gradient import ENGINES, Engine, loop_gradient, loss_from_labels
from numgrad.precision import (
    advised_h,
    smallest_resolving_h,
    smallest_unflowing_h,
    textbook_h,
    working_dtype,
)
from numgrad.vectorized import vectorized_gradient
from numgrad.vectorized_complex import complex_step_gradient
from numgrad.vectorized_forward import forward_gradient

# A real scheme's stencil: (multiple of h, weight) pairs and the divisor of h.
Stencil = tuple[tuple[tuple[int, int], ...], int]


@dataclass(frozen=True)
class Scheme:
    """One finite-difference scheme: its engines, its truncation order and its limit on h."""

    name: str
    order: int
    loop: Engine
    vectorized: Engine
    complex_step: bool = False

    def h_min(self, W: np.ndarray, x: np.ndarray) -> float:
        """The smallest h this scheme can use at ``W`` and ``x`` (in W's working dtype)."""
        if self.complex_step:
            return smallest_unflowing_h(x, working_dtype(W))
        return smallest_resolving_h(W)

    def below_limit(self, step: int, weight_max: float) -> str:
        """What an h below this scheme's limit does at descent step ``step`` (for StepTooSmall).

        Examples
        --------
        >>> SCHEMES["central"].below_limit(3, 1048576.0)
        'no longer resolves W (max|W| = 1e+06)'
        >>> SCHEMES["complex"].below_limit(0, 0.5)
        'is too small for the complex step (h·x underflows)'
        """
        if self.complex_step:
            return "is too small for the complex step (h·x underflows)"
        verb = "no longer resolves" if step else "does not resolve"
        return f"{verb} W (max|W| = {weight_max:.2g})"

    def too_small(self, h: float, W: np.ndarray, x: np.ndarray) -> str | None:
        """Why ``h`` is below this scheme's limit, with the advice; None when it is not.

        Examples
        --------
        >>> W, x = np.array([[0.5, -0.64]]), np.array([[1e-300]])
        >>> SCHEMES["central"].too_small(1e-20, W, x)
        'does not resolve W in float64 (max|W| = 0.64: some w ± h == w); use h >= 5.6e-17'
        >>> SCHEMES["complex"].too_small(1e-20, W, x)
        'h·x underflows in float64 (min|x| = 1e-300: digits lost); use h >= 2.3e-08'
        >>> SCHEMES["complex"].too_small(1e-7, W, x) is None
        True
        """
        h_min = self.h_min(W, x)
        if h >= h_min:
            return None
        dtype = working_dtype(W)
        advice = f"use h >= {advised_h(h_min)!r}"
        if self.complex_step:
            size = np.abs(np.asarray(x, dtype=dtype))
            least = float(np.min(size, initial=np.inf, where=size > 0))
            return f"h·x underflows in {dtype} (min|x| = {least:.3g}: digits lost); {advice}"
        largest = float(np.max(np.abs(np.asarray(W, dtype=dtype))))
        return f"does not resolve W in {dtype} (max|W| = {largest:.3g}: some w ± h == w); {advice}"

    def textbook_h(self, dtype: np.dtype) -> float:
        """Where this scheme's error is least for weights of order 1 (``eps`` for the complex step).

        Truncation meets rounding near ``eps^(1/(order+1))``; the complex step has no
        rounding arm, so its textbook h is just far below truncation (``eps``).
        """
        return float(np.finfo(dtype).eps) if self.complex_step else textbook_h(dtype, self.order)

    def auto_h(self, W: np.ndarray, x: np.ndarray) -> float:
        """``gradient.h=auto``: the textbook h times ``max(1, max|W|)``, never below the limit.

        Examples
        --------
        >>> W, x = np.array([[0.5, -3.0]]), np.ones((1, 1))
        >>> [f"{SCHEMES[n].auto_h(W, x):.2g}" for n in ("forward", "central", "central4")]
        ['4.5e-08', '1.8e-05', '0.0022']
        >>> f"{SCHEMES['complex'].auto_h(W, x):.2g}"  # eps * 3
        '6.7e-16'
        """
        scale = max(1.0, float(np.max(np.abs(W))))
        return max(self.textbook_h(working_dtype(W)) * scale, self.h_min(W, x))


def stencil_gradient(
    f: Callable[[np.ndarray], float], w: np.ndarray, h: float, stencil: Stencil
) -> np.ndarray:
    """``sum_k c_k f(w + m_k h e_idx) / (divisor h)`` for every element, one at a time.

    ``stencil = (((m_k, c_k), ...), divisor)``. ``w`` is perturbed in place and restored
    bit for bit, also when ``f`` raises (as :func:`numgrad.gradient.numerical_gradient`);
    ``f(w)`` itself (``m = 0``) is evaluated once.

    Examples
    --------
    >>> forward = (((1, 1), (0, -1)), 1)
    >>> square = lambda v: float(np.sum(v**2))
    >>> stencil_gradient(square, np.array([3.0, 4.0]), 1e-6, forward).round(4)
    array([6., 8.])
    """
    terms, divisor = stencil
    at_w = f(w) if any(m == 0 for m, _ in terms) else 0.0
    grad = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        original = w[idx]  # a scalar copy; restore it, not (w + h) - h, which may differ
        total = 0.0
        try:
            for m, c in terms:
                if m:
                    w[idx] = original + m * h
                total += c * (f(w) if m else at_w)
        finally:
            w[idx] = original
        grad[idx] = total / (divisor * h)
    return grad


FORWARD: Stencil = (((1, 1), (0, -1)), 1)
CENTRAL4: Stencil = (((2, -1), (1, 8), (-1, -8), (-2, 1)), 12)


def _stencil_loop(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float, stencil: Stencil
) -> np.ndarray:
    """The loop engine of a real stencil, over a copy of W in its working dtype."""
    w = np.asarray(W, dtype=working_dtype(W)).copy()  # W itself is never perturbed
    x = np.asarray(x, dtype=w.dtype)
    return stencil_gradient(lambda v: loss_from_labels(v, x, labels), w, h, stencil)


def forward_loop_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """Forward differences ``(L(W + h e_ij) - L(W)) / h``, one weight at a time.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> forward_loop_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), 1e-8).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    return _stencil_loop(W, x, labels, h, FORWARD)


def central4_loop_gradient(
    W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float
) -> np.ndarray:
    """Fourth-order differences ``(-L(W+2h) + 8L(W+h) - 8L(W-h) + L(W-2h)) / 12h``, one at a time.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> central4_loop_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), 1e-3).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    return _stencil_loop(W, x, labels, h, CENTRAL4)


_COMPLEX = {np.dtype(np.float64): np.complex128, np.dtype(np.float32): np.complex64}


def complex_loop_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """The complex step, one weight at a time: ``Im L(W + i h e_ij) / h`` in complex arithmetic.

    complex128 for float64 weights, complex64 for float32; the loss is the book's
    (:func:`numgrad.gradient.loss_from_labels` takes complex weights as they are).

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> complex_loop_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), 1e-20).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    dtype = working_dtype(W)
    w = np.asarray(W, dtype=_COMPLEX[dtype]).copy()  # W itself is never perturbed
    # x in the complex dtype once (x @ w would convert it at every call); its real parts
    # round as a cast to W's dtype would.
    x = np.asarray(x, dtype=w.dtype)
    grad = np.zeros(w.shape, dtype=dtype)
    for idx in np.ndindex(w.shape):
        original = w[idx]
        try:
            w[idx] = original + 1j * h  # h rounds to W's precision, as for the real steps
            loss = complex(loss_from_labels(w, x, labels))
        finally:
            w[idx] = original
        grad[idx] = loss.imag / h
    return grad


def central4_gradient(W: np.ndarray, x: np.ndarray, labels: np.ndarray, h: float) -> np.ndarray:
    """The fourth-order difference from two central ones: ``(4 D(h) - D(2h)) / 3``.

    An exact rewrite: with ``D(h) = (L(W+h) - L(W-h)) / 2h`` the stencil's numerator
    ``8 (L(W+h) - L(W-h)) - (L(W+2h) - L(W-2h))`` is ``16 h D(h) - 4 h D(2h)``.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> central4_gradient(W, np.array([[0.6, 0.9]]), np.array([2]), h=1e-2).round(6)
    array([[ 0.2,  0.2, -0.4],
           [ 0.3,  0.3, -0.6]])
    """
    return (4 * vectorized_gradient(W, x, labels, h) - vectorized_gradient(W, x, labels, 2 * h)) / 3


#: The schemes by name (``gradient.scheme``).
SCHEMES: dict[str, Scheme] = {
    "central": Scheme("central", 2, loop_gradient, vectorized_gradient),
    "forward": Scheme("forward", 1, forward_loop_gradient, forward_gradient),
    "central4": Scheme("central4", 4, central4_loop_gradient, central4_gradient),
    "complex": Scheme("complex", 2, complex_loop_gradient, complex_step_gradient, True),
}


def engine_for(method: str, scheme: str) -> Engine:
    """The engine ``gradient.method`` and ``gradient.scheme`` name (analytic: no scheme).

    Examples
    --------
    >>> engine_for("vectorized", "complex") is complex_step_gradient
    True
    >>> engine_for("analytic", "forward") is ENGINES["analytic"]
    True
    """
    if method == "analytic":
        return ENGINES["analytic"]
    return getattr(SCHEMES[scheme], method)
