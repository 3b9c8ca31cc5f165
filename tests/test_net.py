"""Tests of numgrad.net.SimpleNet: the book's example, construction, validation."""

import pickle
import re

import numpy as np
import pytest

from numgrad.gradient import ENGINES, analytic_gradient
from numgrad.net import InputError, SimpleNet

# gradient_simplenet.py with the W the book prints (rounded to 8 digits: 1e-6 is as
# close as its printed results can be reproduced).
BOOK_W = [[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]]
BOOK_X = np.array([0.6, 0.9])
BOOK_T = np.array([0, 0, 1])
BOOK_PREDICT = [1.05414809, 0.63071653, 1.1328074]
BOOK_LOSS = 0.92806853663411326
BOOK_DW = [[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]]

METHODS = sorted(ENGINES)


@pytest.fixture
def net():
    return SimpleNet(BOOK_W)


def raises_input_error(input, message):
    """Expect an InputError naming ``input``, with exactly ``message``."""
    return pytest.raises(InputError, match=f"^{re.escape(message)}$")


# -- the book's worked example ----------------------------------------------------------


def test_book_predict_and_argmax(net):
    p = net.predict(BOOK_X)
    np.testing.assert_allclose(p, BOOK_PREDICT, rtol=0, atol=1e-6)
    assert p.shape == (3,)
    assert np.argmax(p) == 2


def test_book_loss(net):
    assert net.loss(BOOK_X, BOOK_T) == pytest.approx(BOOK_LOSS, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("x", "t"),
    [(BOOK_X, BOOK_T), (BOOK_X, 2), ([BOOK_X], [BOOK_T]), ([BOOK_X], [2])],
    ids=["one-hot", "label", "batch-one-hot", "batch-label"],
)
def test_book_gradient_every_method_and_target_form(net, method, x, t):
    dW = net.gradient(x, t, method=method)
    np.testing.assert_allclose(dW, BOOK_DW, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(net.W, BOOK_W)  # W itself is never modified


def test_book_accuracy(net):
    assert net.accuracy(BOOK_X, BOOK_T) == 1.0
    assert net.accuracy(BOOK_X, 0) == 0.0


# -- construction -------------------------------------------------------------------------


def test_init_copies_to_c_contiguous_float64():
    W = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    net = SimpleNet(W)
    W[0, 0] = 99.0
    assert net.W[0, 0] == 0.0
    assert net.W.flags.c_contiguous and net.W.dtype == np.float64
    assert net.shape == (2, 3)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint16, np.float32])
def test_init_converts_numbers_to_float64(dtype):
    net = SimpleNet(np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype))
    assert net.W.dtype == np.float64
    np.testing.assert_array_equal(net.W, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("method", METHODS)
def test_integer_weights_give_a_nonzero_gradient(method):
    net = SimpleNet([[1, 2, 3], [4, 5, 6]])
    dW = net.gradient([0.5, -0.2], 0, method=method)
    assert dW.dtype == np.float64 and np.abs(dW).min() > 1e-3
    np.testing.assert_allclose(
        dW, analytic_gradient(net.W, np.array([[0.5, -0.2]]), [0]), atol=1e-6
    )


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


def test_random_uses_the_given_generator_only():
    # Reading the legacy global state is the point: it must stay untouched.
    global_state = np.random.get_state()[1].copy()  # noqa: NPY002
    a = SimpleNet.random((784, 10), np.random.default_rng(42))
    b = SimpleNet.random((784, 10), np.random.default_rng(42))
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # noqa: NPY002
    expected = np.random.default_rng(42).standard_normal((784, 10))
    np.testing.assert_array_equal(a.W, expected)
    assert a.shape == (784, 10) and a.W.dtype == np.float64


def test_random_scale():
    net = SimpleNet.random((3, 4), np.random.default_rng(1), scale=0.01)
    np.testing.assert_array_equal(net.W, np.random.default_rng(1).standard_normal((3, 4)) * 0.01)


@pytest.mark.parametrize("rng", [None, 42, np.random.RandomState(0), np.random])
def test_random_requires_a_generator(rng):
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator .*got"):
        SimpleNet.random((2, 3), rng)


@pytest.mark.parametrize("shape", [(2,), (2, 3, 4), (0, 3), (2, -1), (2.0, 3), 5, (True, 3)])
def test_random_rejects_bad_shapes(shape):
    shown = tuple(shape) if isinstance(shape, tuple) else (shape,)
    message = f"shape must be two positive integers (n_inputs, n_classes), got {shown}"
    with raises_input_error("shape", message) as info:
        SimpleNet.random(shape, np.random.default_rng(0))
    assert info.value.input == "shape"


def test_random_one_input_and_one_class():
    net = SimpleNet.random((1, 4), np.random.default_rng(3))
    np.testing.assert_array_equal(net.W, np.random.default_rng(3).standard_normal((1, 4)))
    with pytest.raises(InputError, match="needs at least 2 classes") as info:
        SimpleNet.random((4, 1), np.random.default_rng(3))
    assert info.value.input == "shape"


@pytest.mark.parametrize("scale", [np.nan, np.inf, "1"])
def test_random_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be a finite real number, got"):
        SimpleNet.random((2, 3), np.random.default_rng(0), scale=scale)


def test_repr_small_shows_weights(net):
    text = repr(net)
    assert text.startswith("SimpleNet(shape=(2, 3), dtype=float64, W=[[0.4736")
    assert "\n" not in text


def test_repr_large_shows_statistics():
    net = SimpleNet(np.arange(40.0).reshape(20, 2))
    assert repr(net) == (
        "SimpleNet(shape=(20, 2), dtype=float64, W: mean=19.5, std=11.54, min=0, max=39)"
    )


# -- prepare ------------------------------------------------------------------------------


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
    ):
        x2d, labels = net.prepare(x, t)
        assert x2d.dtype == np.float64 and x2d.flags.c_contiguous
        assert labels.dtype == np.int64 and labels.shape == (3,)
        np.testing.assert_array_equal(x2d, x)
        np.testing.assert_array_equal(labels, [0, 2, 1])


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


def test_predict_shapes(net):
    assert net.predict(BOOK_X).shape == (3,)
    assert net.predict(np.ones((5, 2))).shape == (5, 3)
    assert net.predict([[1, 2]]).dtype == np.float64


# -- gradient -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Vectorized", "numerical", "", None])
def test_gradient_rejects_unknown_methods(net, method):
    message = "unknown gradient method {!r}; choose one of 'vectorized', 'loop', 'analytic'"
    with pytest.raises(ValueError, match=re.escape(message.format(method))):
        net.gradient(BOOK_X, BOOK_T, method=method)


@pytest.mark.parametrize("h", [0, 0.0, -1e-4, np.nan, np.inf, "1e-4", True, None])
def test_gradient_rejects_bad_steps(net, h):
    with pytest.raises(ValueError, match=re.escape(f"h must be a finite number > 0, got {h!r}")):
        net.gradient(BOOK_X, BOOK_T, h=h)


@pytest.mark.parametrize("h", [1e-2, np.float32(1e-3), 1e-5])
def test_gradient_accepts_numeric_steps(net, h):
    np.testing.assert_allclose(
        net.gradient(BOOK_X, BOOK_T, h=h),
        net.gradient(BOOK_X, BOOK_T, method="loop", h=h),
        atol=1e-9,
    )


@pytest.mark.parametrize("method", METHODS)
def test_extreme_logits_every_method_under_raise(method):
    # Logits of +-1e3; the first sample's true class has probability exactly 0.
    net = SimpleNet([[1000.0, -1000.0, 999.5], [0.0, 1000.0, 0.0]])
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    t = np.array([1, 2, 2])
    with np.errstate(all="raise"):
        loss = net.loss(x, t)
        dW = net.gradient(x, t, method=method)
        reference = net.gradient(x, t, method="analytic")
    assert loss == pytest.approx(
        (2 * -np.log(1e-7) - np.log(np.exp(-0.5) / (1 + np.exp(-0.5)) + 1e-7)) / 3
    )
    assert np.isfinite(dW).all()
    np.testing.assert_allclose(dW, reference, rtol=0, atol=1e-6)


# -- float32 ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_float32_net_reproduces_the_book_to_float32_precision(method):
    net = SimpleNet(BOOK_W, dtype=np.float32)
    assert net.W.dtype == np.float32
    assert repr(net).startswith("SimpleNet(shape=(2, 3), dtype=float32, W=[[0.4736, 0.9977")
    x2d, labels = net.prepare(BOOK_X, BOOK_T)
    assert x2d.dtype == np.float32 and labels.dtype == np.int64  # x takes W's dtype
    assert net.predict(BOOK_X).dtype == np.float32
    loss = net.loss(BOOK_X, BOOK_T)
    assert type(loss) is float and loss == pytest.approx(BOOK_LOSS, abs=1e-6)
    # h = 1e-2: near float32's best step (measured errors <= 1e-5; at 1e-4, ~5e-4)
    dW = net.gradient(BOOK_X, BOOK_T, method=method, h=1e-2)
    assert dW.dtype == np.float32
    np.testing.assert_allclose(dW, BOOK_DW, rtol=0, atol=5e-5)


def test_float32_random_is_the_float64_draw_rounded():
    a = SimpleNet.random((5, 3), np.random.default_rng(7), scale=0.1, dtype=np.float32)
    b = SimpleNet.random((5, 3), np.random.default_rng(7), scale=0.1)
    assert a.W.dtype == np.float32 and b.W.dtype == np.float64
    np.testing.assert_array_equal(a.W, b.W.astype(np.float32))


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
