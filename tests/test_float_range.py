"""Every engine at the edges of floating point: extreme logits, tiny probabilities, empty input.

References: the seed's loop (``loop_gradient``) and the closed form; most cases run
under ``errstate(all="raise")``, where an unhandled overflow or underflow is an error.
"""

import numpy as np
import pytest

from numgrad.functions import softmax
from numgrad.gradient import (
    ENGINES,
    analytic_gradient,
    loop_gradient,
    loss_from_labels,
    vectorized_gradient,
)
from tests.reference import EXTREME_LABELS, EXTREME_W, EXTREME_X, random_case

ENGINE_NAMES = sorted(ENGINES)


def test_extreme_logits_setup():
    with np.errstate(all="raise"):
        y = softmax(EXTREME_X @ EXTREME_W)
    assert y[0, 1] == 0.0 and y[2, 2] == 0.0  # true-class probability 0


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_extreme_logits_every_engine_under_raise(name):
    with np.errstate(all="raise"):
        loss = loss_from_labels(EXTREME_W, EXTREME_X, EXTREME_LABELS)
        grad = ENGINES[name](EXTREME_W, EXTREME_X, EXTREME_LABELS, 1e-4)
        loop = loop_gradient(EXTREME_W, EXTREME_X, EXTREME_LABELS, 1e-4)
        closed_form = analytic_gradient(EXTREME_W, EXTREME_X, EXTREME_LABELS)
    # Two samples contribute -log(1e-7) each, the others next to nothing or log 2-ish.
    assert np.isfinite(loss) and loss > 2 * 16.1 / 5
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0.01
    np.testing.assert_allclose(grad, closed_form, rtol=0, atol=1e-6)
    tolerance = 1e-9 if name == "vectorized" else 1e-6
    np.testing.assert_allclose(grad, loop, rtol=0, atol=tolerance)


@pytest.mark.parametrize("true_logit", [-16.0, -17.0, -18.0])
def test_true_class_probability_near_the_1e7_offset(true_logit):
    # y_t ~ 1e-7: the +1e-7 in the log halves the gradient, in both the j == t
    # and j != t columns; the engines must model it, not drop it.
    W = np.array([[0.0, true_logit, 0.5]])
    x = np.array([[1.0], [0.5]])
    labels = np.array([1, 1])
    loop = loop_gradient(W, x, labels)
    np.testing.assert_allclose(vectorized_gradient(W, x, labels), loop, rtol=0, atol=1e-9)
    np.testing.assert_allclose(analytic_gradient(W, x, labels), loop, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_integer_weights_give_a_float64_nonzero_gradient(name):
    W = np.array([[1, 2, 3], [4, 5, 6]])
    x = np.array([[0.5, -0.2], [0.1, 0.3]])
    labels = np.array([0, 2])
    with np.errstate(all="raise"):
        grad = ENGINES[name](W, x, labels, 1e-4)
    assert grad.dtype == np.float64 and np.abs(grad).min() > 0
    np.testing.assert_allclose(grad, analytic_gradient(W.astype(float), x, labels), atol=1e-6)


def test_single_class_gradient_is_zero():
    W, x, labels = random_case(8, 3, 1, 4)
    for name in ENGINE_NAMES:
        np.testing.assert_array_equal(ENGINES[name](W, x, labels, 1e-4), np.zeros((3, 1)))


# -- blank and empty inputs -----------------------------------------------------------------


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_a_blank_batch_has_an_exactly_zero_gradient(name):
    # x = 0: no weight reaches the logits, whatever the labels.
    W, x, labels = random_case(13, 4, 3, 5)
    grad = ENGINES[name](W, np.zeros_like(x), labels, 1e-4)
    assert grad.shape == W.shape
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", ["vectorized", "analytic"])
@pytest.mark.parametrize(("n_inputs", "batch"), [(3, 0), (0, 5)])
def test_no_samples_or_no_inputs_give_a_zero_gradient_of_ws_shape(name, n_inputs, batch):
    W = np.ones((n_inputs, 4), dtype=np.float32)
    grad = ENGINES[name](W, np.ones((batch, n_inputs)), np.zeros(batch, dtype=np.int64), 1e-4)
    assert grad.shape == (n_inputs, 4) and grad.dtype == np.float32
    np.testing.assert_array_equal(grad, 0.0)


# -- probabilities near the bottom of the float range ---------------------------------------

# Sample 0's true class has probability ~1e-300 and class 2 ~1e-174: their product in the
# closed form underflows. Class 3 sits at e^-720, a subnormal exp(z - max z): the kernel's
# ratio k = K/P overflows there. Sample 1's true class is that subnormal one. Sample 3,
# on the second input, carries an ordinary gradient.
TINY_W = np.array([[0.0, -690.0, -400.0, -720.0], [0.5, 0.0, -0.3, 0.2]])
TINY_X = np.array([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 1.0]])
TINY_LABELS = np.array([1, 3, 0, 2])


@pytest.mark.parametrize("h", [1e-4, 1.0])
@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_probabilities_near_the_bottom_of_the_float_range(name, h):
    with np.errstate(all="raise"):
        grad = ENGINES[name](TINY_W, TINY_X, TINY_LABELS, h)
        # the closed form has no h: compare it with the loop where truncation is ~1e-9
        loop = loop_gradient(TINY_W, TINY_X, TINY_LABELS, 1e-4 if name == "analytic" else h)
    assert np.isfinite(grad).all() and np.abs(grad[1]).min() > 0.01
    tolerance = 1e-6 if name == "analytic" else 1e-9
    np.testing.assert_allclose(grad, loop, rtol=0, atol=tolerance)


def test_rows_of_very_different_scale_each_have_their_own_shift():
    # Logits ~800 in one row, ~1 in the other: shifted by the batch's largest logit the
    # small row would underflow to 0 and lose its share of the gradient.
    W = np.array([[1.0, 0.0, 0.5], [0.3, 0.1, 0.0]])
    x, labels = np.array([[800.0, 0.0], [0.0, 1.0]]), np.array([2, 1])
    for name in ENGINE_NAMES:
        grad = ENGINES[name](W, x, labels, 1e-4)
        np.testing.assert_allclose(
            grad[1], analytic_gradient(W, x[1:], labels[1:])[1] / 2, atol=1e-6
        )
        np.testing.assert_allclose(grad, loop_gradient(W, x, labels), rtol=0, atol=1e-9)
