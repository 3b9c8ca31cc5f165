"""Tests of numgrad.schemes: every scheme's vectorized engine against its loop, and its limits.

References: each scheme's loop (the book's one-weight-at-a-time way, written as a
stencil), the book's printed gradient, the closed form, and an extended-precision
stencil that shares no code with the engines.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numgrad.columns import one_sided_coefficients
from numgrad.gradient import (
    ENGINES,
    analytic_gradient,
    loop_gradient,
    loss_from_labels,
    numerical_gradient,
    relative_error,
    vectorized_gradient,
)
from numgrad.precision import smallest_resolving_h
from numgrad.schemes import (
    CENTRAL4,
    FORWARD,
    SCHEMES,
    complex_loop_gradient,
    engine_for,
    stencil_gradient,
)
from tests.reference import (
    BOOK_DW,
    BOOK_LABELS,
    BOOK_W,
    BOOK_X,
    EXTENDED,
    EXTREME_LABELS,
    EXTREME_W,
    EXTREME_X,
    random_case,
)

NAMES = sorted(SCHEMES)
REAL = ["central", "central4", "forward"]
# A step where each scheme reproduces the book's 8 printed digits (truncation below 1e-7).
BOOK_H = {"central": 1e-4, "forward": 1e-7, "central4": 1e-3, "complex": 1e-20}


def test_the_table():
    assert set(SCHEMES) == {"central", "forward", "central4", "complex"}
    assert all(SCHEMES[name].name == name for name in NAMES)
    # central is the book's, unchanged: the very engines of before
    assert SCHEMES["central"].loop is loop_gradient is ENGINES["loop"]
    assert SCHEMES["central"].vectorized is vectorized_gradient is ENGINES["vectorized"]
    for name in NAMES:
        assert engine_for("loop", name) is SCHEMES[name].loop
        assert engine_for("vectorized", name) is SCHEMES[name].vectorized
        assert engine_for("analytic", name) is ENGINES["analytic"]
    assert [SCHEMES[n].order for n in NAMES] == [2, 4, 2, 1]
    assert [SCHEMES[n].complex_step for n in NAMES] == [False, False, True, False]


@pytest.mark.parametrize("method", ["loop", "vectorized"])
@pytest.mark.parametrize("name", NAMES)
def test_book_gradient_every_scheme(name, method):
    grad = engine_for(method, name)(BOOK_W, BOOK_X, BOOK_LABELS, BOOK_H[name])
    np.testing.assert_allclose(grad, BOOK_DW, rtol=0, atol=1e-6)
    assert grad.dtype == np.float64 and grad.shape == BOOK_W.shape


def test_the_stencil_loop_is_the_books_central_bit_for_bit():
    W, x, labels = random_case(3, 4, 3, 5)
    central = (((1, 1), (-1, -1)), 2)
    for h in (1e-1, 1e-4, 1e-7):
        f = lambda w: loss_from_labels(w, x, labels)  # noqa: E731
        np.testing.assert_array_equal(
            stencil_gradient(f, W.copy(), h, central), numerical_gradient(f, W.copy(), h)
        )


def test_the_stencil_loop_restores_w_and_evaluates_f_at_w_once():
    calls = []
    w = np.array([1.0, 2.0, 3.0])

    def f(v):
        calls.append(v.copy())
        return float(np.sum(v**3))

    grad = stencil_gradient(f, w, 1e-3, FORWARD)
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0])
    assert len(calls) == 1 + 3  # f(w) once, then one perturbed point per element
    np.testing.assert_allclose(grad, 3 * w**2, rtol=1e-2)
    calls.clear()
    grad = stencil_gradient(f, w, 1e-2, CENTRAL4)
    assert len(calls) == 4 * 3  # no unperturbed point in the fourth-order stencil
    np.testing.assert_allclose(grad, 3 * w**2, rtol=1e-12)  # exact for a cubic

    def failing(v):
        if v[1] != 2.0:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError):
        stencil_gradient(failing, w, 1e-3, CENTRAL4)
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0])


def test_the_loops_do_not_touch_the_callers_w():
    W, x, labels = random_case(8, 3, 4, 6)
    before = W.copy()
    for name in NAMES:
        SCHEMES[name].loop(W, x, labels, 1e-3)
        SCHEMES[name].vectorized(W, x, labels, 1e-3)
    np.testing.assert_array_equal(W, before)


# -- every vectorized engine equals its loop (<= 1e-9 relative in float64) -----------------


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_inputs=st.integers(1, 5),
    n_classes=st.integers(2, 5),
    batch=st.integers(1, 8),
    logit_scale=st.sampled_from([0.1, 1.0, 5.0]),
    x_scale=st.sampled_from([0.3, 1.0, 30.0]),
    log_h=st.floats(-4, 0.5),
    name=st.sampled_from(NAMES),
)
def test_vectorized_equals_loop_property(
    seed, n_inputs, n_classes, batch, logit_scale, x_scale, log_h, name
):
    # Random shapes, data and steps, narrow and wide (h max|x| from 1e-5 to ~300).
    W, x, labels = random_case(seed, n_inputs, n_classes, batch, logit_scale)
    x = x * x_scale
    h = 10.0**log_h
    with np.errstate(all="raise"):
        vec = SCHEMES[name].vectorized(W, x, labels, h)
        loop = SCHEMES[name].loop(W, x, labels, h)
    # The loop's own rounding, ~eps * loss / h per weight, bounds the agreement of a
    # (nearly) vanishing gradient; everywhere else it is relative.
    noise = 1e-15 * max(1.0, loss_from_labels(W, x, labels)) / h
    assert relative_error(vec, loop) <= 1e-9 or np.abs(vec - loop).max() <= noise


WIDE = [(0.1, 20.0), (1.0, 20.0), (0.5, 255.0)]  # (h, x scale): h max|x| from ~5 to ~500
# Rows of logits from ~1e-3 to ~1e4: a shift by the batch's max instead of each row's
# would underflow the small rows' exp.
ROW_SCALES = np.array([1e-3, 0.1, 1, 3, 10, 30, 100, 300, 1e3, 1e4, 10, 0.01])[:, None]


@pytest.mark.parametrize("rows", ["even", "row-scales"])
@pytest.mark.parametrize(("h", "scale"), WIDE)
@pytest.mark.parametrize("name", NAMES)
def test_wide_steps_every_scheme(name, h, scale, rows):
    rng = np.random.default_rng(int(scale))
    W, x, labels = (
        0.1 * rng.standard_normal((5, 4)),
        scale * rng.random((12, 5)),
        rng.integers(0, 4, 12),
    )
    x[:, 1] *= -1
    if rows == "row-scales":
        W, x = 10 * W, x * ROW_SCALES / scale
    assert h * np.abs(x).max() > 1
    with np.errstate(all="raise"):  # no overflow, no nan, whatever the step
        vec = SCHEMES[name].vectorized(W, x, labels, h)
        loop = SCHEMES[name].loop(W, x, labels, h)
    assert np.abs(loop).max() > 1e-4
    assert relative_error(vec, loop) <= 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_extreme_logits_every_scheme(name):
    h = 1e-20 if name == "complex" else 1e-4
    with np.errstate(all="raise"):
        vec = SCHEMES[name].vectorized(EXTREME_W, EXTREME_X, EXTREME_LABELS, h)
        loop = SCHEMES[name].loop(EXTREME_W, EXTREME_X, EXTREME_LABELS, h)
    assert np.abs(loop).max() > 0.01
    assert relative_error(vec, loop) <= 1e-9
    closed_form = analytic_gradient(EXTREME_W, EXTREME_X, EXTREME_LABELS)
    np.testing.assert_allclose(vec, closed_form, rtol=0, atol=1e-4)


@pytest.mark.parametrize("h", [0.5, 1000.0])
@pytest.mark.parametrize("name", NAMES)
def test_wide_steps_bring_back_classes_whose_exp_underflowed(name, h):
    # Class 0 leads by 800: the others' exp(z - max z) is 0, yet a step of 1000 brings
    # them back. The one-sided and complex steps must count them, as the loop does.
    W = np.array([[800.0, 0.0, -5.0], [0.0, 1.0, 0.0]])
    x = np.array([[1.0, 0.0], [1.0, 2.0], [0.5, -1.0], [1.0, 0.0]])
    for labels in ([1, 0, 2, 0], [0, 0, 0, 0], [2, 1, 1, 2]):
        labels = np.array(labels)
        with np.errstate(all="raise"):
            vec = SCHEMES[name].vectorized(W, x, labels, h)
        loop = SCHEMES[name].loop(W, x, labels, h)
        np.testing.assert_allclose(vec, loop, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("batch", [300, 600])
@pytest.mark.parametrize("name", ["forward", "complex"])
def test_large_batches_span_product_groups(name, batch):
    W, x, labels = random_case(batch, 3, 4, batch)
    h = 1e-20 if name == "complex" else 1e-4
    vec = SCHEMES[name].vectorized(W, x, labels, h)
    assert relative_error(vec, SCHEMES[name].loop(W, x, labels, h)) <= 1e-9


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_complex_step_products_do_not_wrap_past_pi(sign):
    # h |x| ~ 0.9: each sample turns the product by up to 0.9 rad; a product over 256
    # samples would wrap around pi many times. Groups keep the angle unambiguous.
    W = np.array([[0.0, 0.0, -0.5]])
    x, labels = np.full((600, 1), 0.9 * sign), np.full(600, 2)
    vec = SCHEMES["complex"].vectorized(W, x, labels, 1.0)
    np.testing.assert_allclose(vec, complex_loop_gradient(W, x, labels, 1.0), rtol=1e-12)


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
@pytest.mark.parametrize(("name", "stencil"), [("forward", FORWARD), ("central4", CENTRAL4)])
@pytest.mark.parametrize("h", [1e-2, 1e-4])
def test_one_sided_and_fourth_order_against_extended_precision(name, stencil, h):
    # The same stencil in ~19 digits: the vectorized engines are closer to it than the
    # float64 loop (whose rounding is ~1e-16 * loss / h).
    W, x, labels = random_case(21, 6, 4, 16)
    Wl, xl = W.astype(np.longdouble), x.astype(np.longdouble)
    rows = np.arange(len(labels))

    def loss(w):
        z = xl @ w
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return -np.sum(np.log(e[rows, labels] / e.sum(axis=1) + np.longdouble(1e-7))) / len(rows)

    reference = stencil_gradient(loss, Wl.copy(), np.longdouble(h), stencil)
    vec = SCHEMES[name].vectorized(W, x, labels, h)
    loop = SCHEMES[name].loop(W, x, labels, h)
    assert float(np.abs(vec - reference).max()) < 1e-11
    assert float(np.abs(vec - reference).max()) <= float(np.abs(loop - reference).max()) * 2


# -- float32: each scheme in W's dtype, as central --------------------------------------

# Measured at h = 1e-2 (1e-20 complex), relative to the same engine in float64: the
# vectorized engines carry float32's rounding once (<= 1.3e-5; complex 2.2e-7), the loops
# W + h's and the summed loss's as well (<= 4.9e-4 forward, 4.4e-4 central4, 3.3e-4
# central; complex 2e-7): in float32 the engines agree to the loop's rounding.
FLOAT32 = {
    "forward": (5e-5, 3e-3),
    "central4": (5e-5, 3e-3),
    "complex": (1e-6, 1e-6),
    "central": (5e-5, 3e-3),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", [(2, 3, 1), (20, 10, 16), (50, 10, 32)])
def test_float32_every_scheme(name, case):
    W, x, labels = random_case(sum(case), *case)
    h = 1e-20 if name == "complex" else 1e-2
    W32, x32 = W.astype(np.float32), x.astype(np.float32)
    with np.errstate(all="raise"):
        vec32 = SCHEMES[name].vectorized(W32, x32, labels, h)
        loop32 = SCHEMES[name].loop(W32, x32, labels, h)
    assert vec32.dtype == loop32.dtype == np.float32
    vec64 = SCHEMES[name].vectorized(W, x, labels, h)
    vec_tol, loop_tol = FLOAT32[name]
    assert 0 < relative_error(vec32, vec64) < vec_tol
    assert relative_error(loop32, vec64) < loop_tol
    assert relative_error(vec32, loop32) < loop_tol + vec_tol


@pytest.mark.parametrize("h", [0.05, 0.5, 5.0])
@pytest.mark.parametrize("name", NAMES)
def test_float32_wide_steps_every_scheme(name, h):
    # As test_precision.py's for central: h max|x| from ~4 to ~400, float32's e^88 range.
    # Gradient entries below float32's smallest normal are 0 or subnormal, never an error.
    W, x, labels = random_case(3, 20, 10, 16)
    x = 30 * x
    W32, x32 = W.astype(np.float32), x.astype(np.float32)
    with np.errstate(all="raise"):
        vec32 = SCHEMES[name].vectorized(W32, x32, labels, h)
        loop32 = SCHEMES[name].loop(W32, x32, labels, h)
    vec64 = SCHEMES[name].vectorized(W, x, labels, h)
    assert vec32.dtype == loop32.dtype == np.float32
    assert relative_error(vec32, vec64) < 1e-4  # measured <= 4.5e-5 (forward, h = 0.05)
    assert relative_error(loop32, vec64) < 1e-3  # measured <= 3.5e-4 (central4, h = 0.05)


@pytest.mark.parametrize("h", [0.05, 0.5, 5.0])
def test_float32_wide_steps_on_a_saturated_loss(h):
    # Every sample confidently wrong (loss 16, gradient ~3e-19): the real steps see only
    # float32's rounding, the complex step still resolves the gradient. No engine raises.
    W, x, labels = random_case(0, 20, 10, 16)
    x = 30 * x
    W32, x32 = W.astype(np.float32), x.astype(np.float32)
    with np.errstate(all="raise"):
        for name in NAMES:
            for engine in (SCHEMES[name].vectorized, SCHEMES[name].loop):
                assert np.isfinite(engine(W32, x32, labels, h)).all()
        vec32 = SCHEMES["complex"].vectorized(W32, x32, labels, h)
        loop32 = SCHEMES["complex"].loop(W32, x32, labels, h)
    vec64 = SCHEMES["complex"].vectorized(W, x, labels, h)
    assert 0 < np.abs(vec64).max() < 1e-18
    assert relative_error(vec32, vec64) < 3e-5  # measured <= 6.4e-6
    assert relative_error(loop32, vec64) < 3e-5


@pytest.mark.parametrize("name", NAMES)
def test_float32_extreme_logits_every_scheme(name):
    h = 1e-20 if name == "complex" else 1e-2  # 1e-2 resolves max|W| = 1000 in float32
    W32, x32 = EXTREME_W.astype(np.float32), EXTREME_X.astype(np.float32)
    with np.errstate(all="raise"):
        vec32 = SCHEMES[name].vectorized(W32, x32, EXTREME_LABELS, h)
        loop32 = SCHEMES[name].loop(W32, x32, EXTREME_LABELS, h)
    vec64 = SCHEMES[name].vectorized(EXTREME_W, EXTREME_X, EXTREME_LABELS, h)
    vec_tol, loop_tol = FLOAT32[name]  # measured <= 1.1e-5 and 9.3e-4 (central4)
    assert relative_error(vec32, vec64) < vec_tol
    assert relative_error(loop32, vec64) < loop_tol


# -- the complex step: no cancellation, down to where h x underflows ------------------------

COMPLEX_STEPS = [10.0**-k for k in (8, 10, 16, 20, 50, 100, 150, 200, 250, 300)]


@pytest.mark.parametrize("method", ["loop", "vectorized"])
@pytest.mark.parametrize(
    "case", [(2, 3, 1), (4, 3, 5), (20, 10, 16), (50, 10, 32)], ids=lambda c: "x".join(map(str, c))
)
def test_complex_step_matches_the_analytic_gradient_for_every_tiny_h(case, method):
    W, x, labels = random_case(sum(case) + 7, *case)
    reference = analytic_gradient(W, x, labels)
    errors = [
        relative_error(engine_for(method, "complex")(W, x, labels, h), reference)
        for h in COMPLEX_STEPS
    ]
    assert max(errors) <= 1e-14, dict(zip(COMPLEX_STEPS, errors, strict=True))  # measured <= 3e-16


def test_complex_step_on_the_books_example_and_extreme_logits():
    for W, x, labels in ((BOOK_W, BOOK_X, BOOK_LABELS), (EXTREME_W, EXTREME_X, EXTREME_LABELS)):
        reference = analytic_gradient(W, x, labels)
        for h in (1e-8, 1e-20, 1e-300):
            assert (
                relative_error(SCHEMES["complex"].vectorized(W, x, labels, h), reference) <= 1e-14
            )
            assert relative_error(SCHEMES["complex"].loop(W, x, labels, h), reference) <= 1e-14


def test_a_real_step_of_1e_20_gives_nothing_the_complex_step_everything():
    # Central differences at h = 1e-20: W + h == W, every quotient exactly 0.
    assert not SCHEMES["central"].loop(BOOK_W, BOOK_X, BOOK_LABELS, 1e-20).any()
    grad = SCHEMES["complex"].loop(BOOK_W, BOOK_X, BOOK_LABELS, 1e-20)
    np.testing.assert_allclose(grad, BOOK_DW, rtol=0, atol=1e-6)


def test_limits_and_textbook_steps_per_scheme():
    W, x = np.array([[0.5, -3.0]]), np.array([[0.6, 0.0], [-2.0, 1e-3]])
    for name in REAL:
        assert SCHEMES[name].h_min(W, x) == smallest_resolving_h(W) == np.nextafter(2.0**-52, 1)
    assert SCHEMES["complex"].h_min(W, x) == pytest.approx(2.0**-1022 / 1e-3, rel=1e-15)
    assert SCHEMES["complex"].too_small(1e-306, W, x).endswith("use h >= 2.3e-305")
    for name, exponent in (("forward", 1 / 2), ("central", 1 / 3), ("central4", 1 / 5)):
        for dtype in (np.float32, np.float64):
            eps = float(np.finfo(dtype).eps)
            assert SCHEMES[name].textbook_h(dtype) == pytest.approx(eps**exponent)
            assert SCHEMES[name].auto_h(W.astype(dtype), x) == pytest.approx(3 * eps**exponent)
            assert SCHEMES[name].auto_h(W.astype(dtype) / 10, x) == pytest.approx(eps**exponent)
    assert SCHEMES["complex"].auto_h(W, x) == 3 * 2.0**-52
    # never below the limit: x so small that eps * 3 would underflow in h x
    tiny_x = np.array([[1e-295]])
    assert SCHEMES["complex"].auto_h(W, tiny_x) == SCHEMES["complex"].h_min(W, tiny_x)


@pytest.mark.parametrize("name", NAMES)
def test_a_subnormal_step_is_no_crash(name):
    # W = 0 resolves any h > 0, so a subnormal h passes the refusal; sizing the product
    # groups by log_range / (h max|x|) must not turn inf into an int (OverflowError).
    W, x, labels = np.zeros((2, 3)), BOOK_X, BOOK_LABELS
    for h in (5e-324, 1e-320):
        grad = SCHEMES[name].vectorized(W, x, labels, h)
        assert grad.shape == W.shape and np.isfinite(grad).all()


def tiled_case(seed, n_small, n_classes, batch, repeats, x_scale):
    """A wide problem whose gradient is a small one's, repeated (see test_vectorized.py)."""
    W_small, x_small, labels = random_case(seed, n_small, n_classes, batch)
    W = np.zeros((n_small * repeats, n_classes))
    W[:n_small] = W_small
    return W, np.tile(x_scale * x_small, repeats), labels, W_small, x_scale * x_small


@pytest.mark.parametrize("h", [1e-4, 0.5])  # near 1, and wide: h max|x| ~ 10
@pytest.mark.parametrize(
    ("n_classes", "batch", "repeats"),
    [
        (3, 5, 11_000),  # 44,000 inputs: more than one work block of columns
        (10, 300, 196),  # 784 inputs: blocks of 16 rows, many of them
    ],
)
@pytest.mark.parametrize("name", ["forward", "complex", "central4"])
def test_chunked_work_every_scheme(name, n_classes, batch, repeats, h):
    W, x, labels, W_small, x_small = tiled_case(batch, 4, n_classes, batch, repeats, 8.0)
    small = SCHEMES[name].loop(W_small, x_small, labels, h)
    grad = SCHEMES[name].vectorized(W, x, labels, h)
    blocks = grad.reshape(repeats, 4, n_classes)
    assert relative_error(blocks, np.broadcast_to(small, blocks.shape)) <= 1e-9


# -- the engines' contract: W's working dtype, degenerate shapes ---------------------------

ENGINES_OF = [(name, method) for name in NAMES for method in ("loop", "vectorized")]
STEP = {"forward": 1e-6, "central": 1e-4, "central4": 1e-2, "complex": 1e-20}


@pytest.mark.parametrize(("name", "method"), ENGINES_OF)
def test_every_engine_computes_in_ws_working_dtype(name, method):
    engine = engine_for(method, name)
    W, x, labels = random_case(5, 4, 3, 6)
    W32 = W.astype(np.float32)
    grads = [engine(W32, x.astype(d), labels, STEP[name]) for d in (np.float32, np.float64)]
    assert grads[0].dtype == grads[1].dtype == np.float32
    np.testing.assert_array_equal(grads[0], grads[1])  # x is cast to W's dtype
    W_int = np.round(3 * W).astype(np.int64)  # integer weights perturb in float64
    as_int = engine(W_int, x.astype(np.float32), labels, STEP[name])
    assert as_int.dtype == np.float64
    np.testing.assert_array_equal(
        as_int, engine(W_int.astype(np.float64), x.astype(np.float32).astype(np.float64), labels,
                       STEP[name])
    )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("shape", "batch", "blank"),
    [((3, 1), 4, False), ((0, 3), 4, False), ((3, 3), 0, False), ((1, 2), 3, False),
     ((1, 3), 1, False), ((2, 3), 3, True)],
)  # fmt: skip
def test_degenerate_shapes(name, shape, batch, blank):
    rng = np.random.default_rng(batch)
    W = rng.standard_normal(shape)
    x = rng.standard_normal((batch, shape[0])) * (0.0 if blank else 1.0)
    labels = rng.integers(0, shape[1], batch)
    vec = SCHEMES[name].vectorized(W, x, labels, STEP[name])
    assert vec.shape == W.shape and vec.dtype == np.float64
    reference = analytic_gradient(W, x, labels)
    if 0 in (batch, *shape) or shape[1] == 1 or blank:  # nothing for a weight to change
        assert not vec.any()
    else:  # one input, or two classes: a gradient like any other
        assert np.abs(reference).max() > 1e-3
        np.testing.assert_allclose(vec, reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("scale", "h"), [(1.0, 1.0), (20.0, 1.0)])
def test_float32_products_of_forward_ratios_stay_in_range(scale, h):
    # 600 ratios of ~e^-1 (h x = 1, the near-1 form) or ~1e-7 (wide): one product would
    # underflow float32 (e^-87); products over groups sized by float32's range do not.
    W = np.array([[0.0, 0.0, -0.5]])
    x, labels = np.full((600, 1), scale), np.full(600, 2)
    with np.errstate(all="raise"):
        vec32 = SCHEMES["forward"].vectorized(W.astype(np.float32), x.astype(np.float32),
                                              labels, h)  # fmt: skip
    assert relative_error(vec32, SCHEMES["forward"].vectorized(W, x, labels, h)) < 1e-5


def test_one_sided_coefficients_under_raise():
    # exp of logits 1000 below the top underflows: 0 is the right value, never an error
    with np.errstate(all="raise"):
        p, pbar, q, qbar, p_minus_q = one_sided_coefficients(EXTREME_W, EXTREME_X, EXTREME_LABELS)
    np.testing.assert_allclose(p + pbar, 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(q + qbar, 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(p - q, p_minus_q, rtol=0, atol=1e-15)
    assert p.min() == 0.0  # some class did underflow


@pytest.mark.parametrize(
    ("name", "dtype", "message"),
    [
        ("central", np.float64, "does not resolve W in float64 (max|W| = 3: some w ± h == w); "
                                "use h >= 2.3e-16"),
        ("forward", np.float32, "does not resolve W in float32 (max|W| = 3: some w ± h == w); "
                                "use h >= 1.2e-07"),
        ("complex", np.float64, "h·x underflows in float64 (min|x| = 0.001: digits lost); "
                                "use h >= 2.3e-305"),
        ("complex", np.float32, "h·x underflows in float32 (min|x| = 0.001: digits lost); "
                                "use h >= 1.2e-35"),
    ],
)  # fmt: skip
def test_the_refusal_names_the_dtype_the_limit_and_the_advice(name, dtype, message):
    W = np.array([[0.5, -3.0]], dtype=dtype)
    x = np.array([[0.6, 0.0], [-2.0, 1e-3]])
    assert SCHEMES[name].too_small(1e-320, W, x) == message
    advised = float(message.rsplit(" ", 1)[1])
    assert SCHEMES[name].too_small(advised, W, x) is None


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_shapes_keep_ws_dtype(name):
    for shape, batch in (((3, 1), 4), ((0, 3), 4), ((3, 3), 0)):
        W = np.ones(shape, dtype=np.float32)
        grad = SCHEMES[name].vectorized(W, np.ones((batch, shape[0])), np.zeros(batch, int), 1e-3)
        assert grad.dtype == np.float32 and grad.shape == shape and not grad.any()
