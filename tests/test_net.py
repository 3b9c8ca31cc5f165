"""Tests of numgrad.net.SimpleNet: the book's example, construction, methods, float32."""

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


@pytest.mark.parametrize(
    ("rng", "kind"),
    [
        (None, "NoneType"),
        (42, "int"),
        (np.random.RandomState(0), "RandomState"),
        (np.random, "module"),
    ],
)
def test_random_requires_a_generator(rng, kind):
    message = f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {kind}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        SimpleNet.random((2, 3), rng)


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


def test_repr_shows_up_to_12_weights_on_one_line():
    assert repr(SimpleNet(np.arange(12.0).reshape(4, 3) / 7)) == (
        "SimpleNet(shape=(4, 3), dtype=float64, W=[[0.    , 0.1429, 0.2857], "
        "[0.4286, 0.5714, 0.7143], [0.8571, 1.    , 1.1429], [1.2857, 1.4286, 1.5714]])"
    )


def test_repr_large_shows_statistics():
    net = SimpleNet(np.arange(40.0).reshape(20, 2))
    assert repr(net) == (
        "SimpleNet(shape=(20, 2), dtype=float64, W: mean=19.5, std=11.54, min=0, max=39)"
    )


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
