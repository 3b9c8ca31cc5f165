"""Tests of numgrad.gradient: the book's example, engine agreement, the loop's contracts.

References: the book's printed numbers, the seed's loop (``loop_gradient``) and the
closed form. (The engines at the edges of floating point: test_float_range.py.)
"""

import re

import numpy as np
import pytest

from numgrad.gradient import (
    ENGINES,
    accuracy_from_labels,
    analytic_gradient,
    loop_gradient,
    loss_from_labels,
    numerical_gradient,
    relative_error,
    vectorized_gradient,
)
from numgrad.net import SimpleNet
from tests.reference import (
    BOOK_DW,
    BOOK_LABELS,
    BOOK_LOSS,
    BOOK_W,
    BOOK_X,
    random_case,
)

ENGINE_NAMES = sorted(ENGINES)


# -- the book's worked example ----------------------------------------------------------


def test_book_loss():
    assert loss_from_labels(BOOK_W, BOOK_X, BOOK_LABELS) == pytest.approx(BOOK_LOSS, abs=1e-6)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_book_gradient_every_engine(name):
    grad = ENGINES[name](BOOK_W, BOOK_X, BOOK_LABELS, 1e-4)
    np.testing.assert_allclose(grad, BOOK_DW, rtol=0, atol=1e-6)


def test_engines_table():
    assert set(ENGINES) == {"vectorized", "loop", "analytic"}
    # One uniform positional signature (W, x, labels, h); analytic ignores h.
    grads = [ENGINES[name](BOOK_W, BOOK_X, BOOK_LABELS, 1e-3) for name in ENGINE_NAMES]
    for grad in grads:
        assert grad.shape == BOOK_W.shape and grad.dtype == np.float64
    np.testing.assert_array_equal(
        ENGINES["analytic"](BOOK_W, BOOK_X, BOOK_LABELS, 0.5),
        analytic_gradient(BOOK_W, BOOK_X, BOOK_LABELS),
    )


# -- the engines agree --------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("target", ["labels", "one-hot"])
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("shape", [(1, 2), (2, 3), (50, 10)])
def test_engines_agree_on_random_cases(shape, batch, target, order):
    seed = 1000 * shape[0] + 10 * shape[1] + batch
    W, x, labels = random_case(seed, *shape, batch)
    t = labels if target == "labels" else np.eye(shape[1])[labels]
    x2d, labels2 = SimpleNet(W).prepare(x, t)
    np.testing.assert_array_equal(labels2, labels)
    W = np.asarray(W, order=order)
    W_before = W.copy(order="K")
    loop = loop_gradient(W, x2d, labels2)
    vec = vectorized_gradient(W, x2d, labels2)
    ana = analytic_gradient(W, x2d, labels2)
    np.testing.assert_array_equal(W, W_before)  # no engine touches the caller's W
    np.testing.assert_allclose(vec, loop, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ana, loop, rtol=0, atol=1e-6)
    for grad in (loop, vec, ana):
        assert grad.flags.c_contiguous and grad.dtype == np.float64


# -- numerical_gradient ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (1,), (4,), (2, 3), (2, 3, 4)])
def test_numerical_gradient_of_sum_of_squares_is_2x(shape):
    x = np.random.default_rng(9).standard_normal(shape)
    grad = numerical_gradient(lambda v: np.sum(v**2), x)
    assert grad.shape == x.shape
    np.testing.assert_allclose(grad, 2 * x, rtol=0, atol=1e-8)


def test_numerical_gradient_of_a_quadratic_form_on_a_3d_array():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 3, 2))
    A = rng.standard_normal((x.size, x.size))
    grad = numerical_gradient(lambda v: v.ravel() @ A @ v.ravel(), x)
    np.testing.assert_allclose(grad, ((A + A.T) @ x.ravel()).reshape(x.shape), atol=1e-7)


def test_numerical_gradient_of_a_fortran_ordered_array():
    x = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    weights = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, 7.0]])
    grad = numerical_gradient(lambda v: np.sum(weights * v), x)
    np.testing.assert_allclose(grad, weights, atol=1e-9)


def test_numerical_gradient_restores_x_bitwise():
    h = 1e-4
    # Just below a power of two, v + h rounds to the coarser grid above it, so
    # (v + h) - h != v (and for -0.99995, (v - h) + h != v): restoring by undoing
    # the step would corrupt x; the stored original must be written back.
    x = np.array([[0.1, 0.99995, 3.3], [0.49999, -0.99995, 123.456]])
    before = x.copy()
    assert ((x + h) - h != x).any()
    assert ((x - h) + h != x).any()
    numerical_gradient(lambda v: float(np.sum(np.sin(v))), x, h)
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([0.1, 0.7, 3.3])
    before = x.copy()
    calls = []

    def f(v):
        calls.append(v.copy())
        if len(calls) == 4:  # the minus step of the second element
            raise RuntimeError("boom")
        return float(v.sum())

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, before)
    assert calls[3][1] == np.float64(0.7) - 1e-4  # it did fail mid-perturbation


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_numerical_gradient_refuses_non_float_x(dtype):
    x = np.array([1, 2, 3], dtype=dtype)
    kind = np.dtype(dtype)
    message = (
        f"x must have a real floating dtype, got {kind}: x[i] + h would be truncated to {kind} "
        "and the gradient silently be wrong; pass x.astype(np.float64)"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        numerical_gradient(lambda v: float(np.sum(v)), x)


def test_numerical_gradient_refuses_non_arrays():
    message = "x must be a numpy array (it is perturbed in place), got list"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        numerical_gradient(lambda v: float(np.sum(v)), [1.0, 2.0])


def test_numerical_gradient_keeps_float32():
    x = np.array([1.0, -2.0], dtype=np.float32)
    grad = numerical_gradient(lambda v: float(np.sum(v.astype(np.float64) ** 2)), x, h=1e-2)
    assert grad.dtype == np.float32
    np.testing.assert_allclose(grad, [2.0, -4.0], rtol=1e-4)


def test_numerical_gradient_calls_f_with_x_itself():
    # The contract: f must compute from the array it is given. That array is x
    # itself, perturbed in place (so the book's closure over net.W happens to work).
    x = np.array([1.0, 2.0])
    seen = []
    numerical_gradient(lambda v: seen.append(v is x) or 0.0, x)
    assert seen == [True] * 4


def test_numerical_gradient_f_that_ignores_its_argument_gets_zero():
    # The book's pattern `lambda w: net.loss(x, t)` ignores w. Aimed at a copy of W
    # (as loop_gradient does, to leave the caller's W alone) it silently yields 0;
    # reading the argument gives the true gradient.
    W, x, labels = BOOK_W, BOOK_X, BOOK_LABELS
    ignores_argument = numerical_gradient(lambda w: loss_from_labels(W, x, labels), W.copy())
    reads_argument = numerical_gradient(lambda w: loss_from_labels(w, x, labels), W.copy())
    np.testing.assert_array_equal(ignores_argument, np.zeros_like(W))
    np.testing.assert_allclose(reads_argument, BOOK_DW, atol=1e-6)


def test_loop_gradient_does_not_modify_w_even_if_loss_fails():
    W = np.asfortranarray(BOOK_W)
    before = W.copy()
    with pytest.raises(IndexError):
        loop_gradient(W, BOOK_X, np.array([7]))  # label out of range (no validation)
    np.testing.assert_array_equal(W, before)


# -- relative_error -----------------------------------------------------------------------


def test_relative_error_properties():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert relative_error(a, a) == 0.0
    assert relative_error(np.zeros(5), np.zeros(5)) == 0.0
    assert relative_error(a, b) == relative_error(b, a)
    assert relative_error(a, -a) == 1.0
    assert 0.0 < relative_error(a, b) <= 1.0
    assert relative_error(1e-20 * a, 1e-20 * b) == pytest.approx(relative_error(a, b))
    assert relative_error(np.array([3.0, 4.0]), np.zeros(2)) == 1.0
    assert isinstance(relative_error(a, b), float)


def test_relative_error_of_the_engines_is_small():
    W, x, labels = random_case(12, 50, 10, 32)
    grad = analytic_gradient(W, x, labels)
    assert relative_error(vectorized_gradient(W, x, labels), grad) < 1e-7
    assert relative_error(vectorized_gradient(W, x, labels), loop_gradient(W, x, labels)) < 1e-10


# -- accuracy -------------------------------------------------------------------------------


def test_accuracy_takes_each_rows_largest_logit():
    # Row 0's largest logit is in column 1, row 1's in column 0 (a flattened argmax: 1, 1).
    x = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert accuracy_from_labels(np.eye(2), x, np.array([1, 0])) == 1.0
    assert accuracy_from_labels(np.eye(2), x, np.array([1, 1])) == 0.5


# -- relative_error of other dtypes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (np.array([1], dtype=np.uint8), np.array([2], dtype=np.uint8), 1 / 3),  # no wrap-around
        (np.array([True, False]), np.array([False, False]), 1.0),  # bool has no subtraction
        (np.array([2**62]), np.array([-(2**62)]), 1.0),  # int64 difference would overflow
        ([3, 4], (3, 4), 0.0),
        # float32 squares of 1e-23 underflow: the norms must be taken in float64
        (np.array([3e-23, 4e-23], dtype=np.float32), np.zeros(2, dtype=np.float32), 1.0),
        (np.zeros(2, dtype=np.float32), np.array([3e-23, 4e-23], dtype=np.float32), 1.0),
    ],
)
def test_relative_error_of_integers_and_booleans(a, b, expected):
    assert relative_error(a, b) == pytest.approx(expected, rel=1e-15)
