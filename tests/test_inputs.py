"""Tests of numgrad.inputs through SimpleNet: what is accepted, and errors naming the input.

Every message is compared whole, with the ``input`` (x, t, shape or W) it names.
"""

import pickle
import re

import numpy as np
import pytest

from numgrad.net import InputError, SimpleNet

BOOK_W = [[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]]
BOOK_X = np.array([0.6, 0.9])
BOOK_T = np.array([0, 0, 1])


@pytest.fixture
def net():
    return SimpleNet(BOOK_W)


def raises_input_error(input, message):
    """Expect an InputError naming ``input``, with exactly ``message``."""
    return pytest.raises(InputError, match=f"^{re.escape(message)}$")


# -- W ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("W", "input", "message"),
    [
        ([1.0, 2.0], "shape", "W must be 2-D (n_inputs, n_classes), got 1-D with shape (2,)"),
        (
            np.ones((2, 2, 2)),
            "shape",
            "W must be 2-D (n_inputs, n_classes), got 3-D with shape (2, 2, 2)",
        ),
        (np.ones((0, 3)), "shape", "W must be non-empty, got shape (0, 3)"),
        (np.ones((2, 0)), "shape", "W must be non-empty, got shape (2, 0)"),
        (
            np.ones((2, 1)),
            "shape",
            "W has 1 column but a classifier needs at least 2 classes, got shape (2, 1)",
        ),
        (
            [[1.0, np.nan], [0.0, 1.0]],
            "W",
            "W has 1 non-finite value(s) (nan or inf), first at W[0, 1] = nan",
        ),
        (
            [[1.0, 2.0], [np.inf, -np.inf]],
            "W",
            "W has 2 non-finite value(s) (nan or inf), first at W[1, 0] = inf",
        ),
        ([["a", "b"]], "W", "W must hold real numbers (integer or float), got dtype <U1"),
        (
            np.ones((2, 2), dtype=complex),
            "W",
            "W must hold real numbers (integer or float), got dtype complex128",
        ),
        (
            np.ones((2, 2), dtype=bool),
            "W",
            "W must hold real numbers (integer or float), got dtype bool",
        ),
    ],
)
def test_init_rejects_bad_weights(W, input, message):
    with raises_input_error(input, message) as info:
        SimpleNet(W)
    assert info.value.input == input


@pytest.mark.parametrize("shape", [(2,), (2, 3, 4), (0, 3), (2, -1), (2.0, 3), 5, (True, 3)])
def test_random_rejects_bad_shapes(shape):
    shown = tuple(shape) if isinstance(shape, tuple) else (shape,)
    message = f"shape must be two positive integers (n_inputs, n_classes), got {shown}"
    with raises_input_error("shape", message) as info:
        SimpleNet.random(shape, np.random.default_rng(0))
    assert info.value.input == "shape"


# -- x and t ------------------------------------------------------------------------------


def test_prepare_single_sample_forms(net):
    for t in (BOOK_T, 2, np.int64(2), [2], np.array([2]), [BOOK_T]):
        x2d, labels = net.prepare(BOOK_X, t)
        np.testing.assert_array_equal(x2d, [[0.6, 0.9]])
        np.testing.assert_array_equal(labels, [2])
        assert labels.dtype == np.int64


def test_prepare_batches_normalize_types():
    net = SimpleNet(np.zeros((2, 3)))
    x = np.asfortranarray(np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32))
    for t in (
        [0, 2, 1],
        np.array([0, 2, 1], dtype=np.uint8),
        [0.0, 2.0, 1.0],
        np.eye(3)[[0, 2, 1]],
        np.eye(3, dtype=np.uint8)[[0, 2, 1]],
    ):
        x2d, labels = net.prepare(x, t)
        assert x2d.dtype == np.float64 and x2d.flags.c_contiguous
        assert labels.dtype == np.int64 and labels.shape == (3,)
        np.testing.assert_array_equal(x2d, x)
        np.testing.assert_array_equal(labels, [0, 2, 1])


def test_prepare_accepts_uint8_pixels_and_keeps_float64_x_as_is():
    net = SimpleNet(np.zeros((2, 3)))
    x2d, _ = net.prepare(np.array([[0, 255], [128, 7]], dtype=np.uint8), [0, 1])
    np.testing.assert_array_equal(x2d, [[0.0, 255.0], [128.0, 7.0]])
    assert x2d.dtype == np.float64
    x = np.random.default_rng(0).random((1000, 2))  # a large batch is not copied
    assert net.prepare(x, np.zeros(1000, dtype=int))[0] is x


def test_prepare_accepts_boolean_one_hot_rows():
    net = SimpleNet(np.zeros((2, 3)))
    _, labels = net.prepare(np.ones((2, 2)), np.array([[False, True, False], [True, False, False]]))
    np.testing.assert_array_equal(labels, [1, 0])


# (x, t, the input to fix, the whole message)
# fmt: off
PREPARE_ERRORS = [
    (np.ones(3), 0, "shape", "x has 3 features (columns) but W has 2 rows"),
    (np.ones((4, 1)), [0, 0, 0, 0], "shape", "x has 1 features (columns) but W has 2 rows"),
    (np.ones((0, 2)), [], "x", "empty batch: x has 0 samples (rows)"),
    (np.ones((2, 2, 2)), [0, 0], "x", "x must be 1-D (one sample) or 2-D (batch, features), got 3-D with shape (2, 2, 2)"),
    (np.float64(1.0), 0, "x", "x must be 1-D (one sample) or 2-D (batch, features), got 0-D with shape ()"),
    (np.array(["a", "b"]), 0, "x", "x must hold real numbers (integer or float), got dtype <U1"),
    ([[0.6, np.nan], [1.0, 2.0]], [0, 1], "x", "x has 1 non-finite value(s) (nan or inf), first at sample 0, feature 1: nan"),
    ([[0.6, 0.9], [np.inf, 2.0]], [0, 1], "x", "x has 1 non-finite value(s) (nan or inf), first at sample 1, feature 0: inf"),
    (np.ones((4, 2)), [0, 1, 2], "t", "x has 4 samples (rows) but t has 3: they must be the same"),
    (np.ones((2, 2)), 1, "t", "x has 2 samples (rows) but t has 1: they must be the same"),
    (np.ones((2, 2)), np.eye(3), "t", "x has 2 samples (rows) but t has 3: they must be the same"),
    (np.ones((2, 2)), np.ones((2, 4)) / 4, "shape", "t has 4 classes (columns of one-hot rows) but W has 3 columns (classes)"),
    (BOOK_X, [0, 1], "shape", "t has 2 classes (columns of one-hot rows) but W has 3 columns (classes)"),
    (BOOK_X, [0, 0, 0, 1], "shape", "t has 4 classes (columns of one-hot rows) but W has 3 columns (classes)"),
    (np.ones((2, 2)), [0, 3], "t", "label 3 at t[1] is out of range: W has 3 classes, so labels must be in 0..2"),
    (np.ones((2, 2)), [-1, 0], "t", "label -1 at t[0] is out of range: W has 3 classes, so labels must be in 0..2"),
    (BOOK_X, 7, "t", "label 7 at t[0] is out of range: W has 3 classes, so labels must be in 0..2"),
    (np.ones((2, 2)), [[0, 1, 0], [1, 1, 0]], "t", "t row 1 is not one-hot (exactly one 1, zeros elsewhere): [1 1 0]"),
    (np.ones((2, 2)), [[0, 0, 0], [1, 0, 0]], "t", "t row 0 is not one-hot (exactly one 1, zeros elsewhere): [0 0 0]"),
    (BOOK_X, [0.5, 0.5, 0.0], "t", "t row 0 is not one-hot (exactly one 1, zeros elsewhere): [0.5 0.5 0. ]"),
    (BOOK_X, [np.nan, 0, 1], "t", "t row 0 is not one-hot (exactly one 1, zeros elsewhere): [nan  0.  1.]"),
    (BOOK_X, [0, 2, -1], "t", "t row 0 is not one-hot (exactly one 1, zeros elsewhere): [ 0  2 -1]"),
    (np.ones((2, 2)), [[0, 1, 0], [0, 2, 0]], "t", "t row 1 is not one-hot (exactly one 1, zeros elsewhere): [0 2 0]"),
    (np.ones((2, 2)), [["0", "1", "0"], ["1", "0", "0"]], "t", "one-hot t must hold numbers, got dtype <U1"),
    (np.ones((2, 2)), [0.0, 1.5], "t", "labels must be integers, but t[1] = 1.5 is not"),
    (np.ones((2, 2)), [np.nan, 1.0], "t", "labels must be integers, but t[0] = nan is not"),
    (np.ones((2, 2)), [True, False], "t", "labels must be integers (or one-hot rows), got dtype bool"),
    (np.ones((2, 2)), ["0", "1"], "t", "labels must be integers (or one-hot rows), got dtype <U1"),
    (np.ones((2, 2)), np.zeros((2, 3, 1)), "t", "t must be labels (1-D) or one-hot rows (2-D), got 3-D with shape (2, 3, 1)"),
]
# fmt: on


@pytest.mark.parametrize(("x", "t", "input", "message"), PREPARE_ERRORS)
def test_prepare_errors_name_the_problem_and_the_input(net, x, t, input, message):
    with raises_input_error(input, message) as info:
        net.prepare(x, t)
    assert info.value.input == input
    assert isinstance(info.value, ValueError)  # callers catching ValueError still do


@pytest.mark.parametrize("call", ["loss", "accuracy", "gradient"])
def test_public_methods_validate_through_prepare(net, call):
    with raises_input_error("shape", "x has 3 features (columns) but W has 2 rows"):
        getattr(net, call)(np.ones(3), 0)
    message = "label 3 at t[0] is out of range: W has 3 classes, so labels must be in 0..2"
    with raises_input_error("t", message):
        getattr(net, call)(BOOK_X, 3)


def test_predict_validates_x(net):
    with raises_input_error("shape", "x has 1 features (columns) but W has 2 rows"):
        net.predict([1.0])
    message = "x has 1 non-finite value(s) (nan or inf), first at sample 0, feature 1: nan"
    with raises_input_error("x", message) as info:
        net.predict([1.0, np.nan])
    assert info.value.input == "x"


def test_input_error_survives_pickling():
    # Sweep workers send exceptions across processes: the input must arrive too.
    error = pickle.loads(pickle.dumps(InputError("t row 0 is not one-hot", "t")))
    assert type(error) is InputError
    assert (str(error), error.input) == ("t row 0 is not one-hot", "t")


# -- float32 range and dtype --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.longdouble, "complex128"])
def test_dtype_must_be_float32_or_float64(dtype):
    message = f"dtype must be float32 or float64, got {np.dtype(dtype)}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SimpleNet(BOOK_W, dtype=dtype)


def test_values_beyond_float32_range_name_their_input():
    message = "W has 1 value(s) beyond the range of float32 (max 3.4e+38), first at W[1, 0]: -1e+39"
    with raises_input_error("W", message) as info:
        SimpleNet([[0.0, 1.0], [-1e39, 0.0]], dtype=np.float32)
    assert info.value.input == "W"
    net = SimpleNet(BOOK_W, dtype=np.float32)
    message = "x has 2 value(s) beyond the range of float32 (max 3.4e+38), first at sample 1, feature 0: 1e+39"
    with raises_input_error("x", message) as info:
        net.prepare([[0.0, 1.0], [1e39, 1e300]], [0, 1])
    assert info.value.input == "x"
    assert SimpleNet([[0.0, 1.0], [-1e39, 0.0]]).W[1, 0] == -1e39  # float64 holds it
