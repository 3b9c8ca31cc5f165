"""float32 and float64: every engine in W's dtype, and the error-versus-h V of each dtype.

References: the same engine in float64, the float64 analytic gradient, and the
central difference's textbook error model (truncation ~h^2, rounding ~eps/h).
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numgrad.gradient import ENGINES, analytic_gradient, loop_gradient, relative_error
from numgrad.precision import (
    advised_h,
    best_step,
    smallest_resolving_h,
    smallest_unflowing_h,
    working_dtype,
)
from numgrad.schemes import SCHEMES
from tests.reference import random_case

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
# h from 1 down to 1e-12 in half decades
STEPS = [10.0 ** (-k / 2) for k in range(25)]


def as32(*arrays):
    return [np.asarray(a, dtype=np.float32) for a in arrays]


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize(
    ("W_dtype", "expected"),
    [(F32, F32), (F64, F64), (np.int64, F64), (np.float16, F64), (np.longdouble, F64)],
)
def test_every_engine_computes_in_ws_dtype(name, W_dtype, expected):
    W, x, labels = random_case(3, 50, 10, 32)  # longdouble logits change 71 bits here
    W = (10 * W).astype(W_dtype)
    grads = [ENGINES[name](W, x.astype(x_dtype), labels, 1e-2) for x_dtype in (F32, F64)]
    for grad in grads:
        assert grad.dtype == expected == working_dtype(W)
        assert grad.shape == W.shape and grad.flags.c_contiguous
    if W_dtype == F32:  # x is cast to W's dtype: the same bits whichever dtype x comes in
        np.testing.assert_array_equal(grads[0], grads[1])
    elif W_dtype != F64:  # float64 means float64: the same bits as W cast to float64
        np.testing.assert_array_equal(grads[1], ENGINES[name](W.astype(F64), x, labels, 1e-2))


# Measured relative errors at h = 1e-2 (float32's best region): analytic ~2e-7 (float32's
# rounding), vectorized <= 5e-6 (~0.5 eps/h), loop <= 3.3e-4 (~30 eps/h: W + h and the
# summed loss both round in float32).
FLOAT32_TOLERANCE = {"analytic": 1e-6, "vectorized": 5e-5, "loop": 3e-3}


@pytest.mark.parametrize("name", sorted(ENGINES))
@pytest.mark.parametrize("case", [(2, 3, 1), (20, 10, 16), (50, 10, 32)])
def test_float32_engines_against_float64(name, case):
    W, x, labels = random_case(sum(case), *case)
    with np.errstate(all="raise"):
        grad32 = ENGINES[name](*as32(W, x), labels, 1e-2)
    grad64 = ENGINES[name](W, x, labels, 1e-2)
    error = relative_error(grad32, grad64)
    assert 0 < error < FLOAT32_TOLERANCE[name]


@pytest.mark.parametrize("h", [0.05, 0.5, 5.0])
def test_float32_wide_steps_against_float64(h):
    W, x, labels = random_case(3, 20, 10, 16)
    x = 30 * x  # h max|x| from ~4 to ~400: the wide-step form, float32's e^88 range
    with np.errstate(all="raise"):
        vec32 = ENGINES["vectorized"](*as32(W, x), labels, h)
        loop32 = loop_gradient(*as32(W, x), labels, h)
    vec64 = ENGINES["vectorized"](W, x, labels, h)
    assert relative_error(vec32, vec64) < 5e-5  # measured <= 6e-6
    assert relative_error(loop32, vec64) < 1e-3  # measured <= 1.3e-4


@pytest.mark.parametrize(("scale", "h"), [(1.0, 0.45), (1.0, 1.0), (20.0, 1.0)])
def test_float32_product_groups_stay_in_range(scale, h):
    # 600 ratios of ~e^-0.7 (h = 0.45), ~e^-1.4 (near 1) or ~1e-7 (wide): one product would
    # underflow float32 (e^-87) at once; products over groups of 88, 40 or 4 rows do not.
    W = np.array([[0.0, 0.0, -0.5]])
    x, labels = np.full((600, 1), scale), np.full(600, 2)
    with np.errstate(all="raise"):
        vec32 = ENGINES["vectorized"](*as32(W, x), labels, h)
    assert relative_error(vec32, ENGINES["vectorized"](W, x, labels, h)) < 1e-5


@pytest.mark.parametrize("name", ["loop", "vectorized"])
def test_error_versus_h_is_a_v_in_each_dtype(name):
    # Truncation error falls as h^2, rounding error grows as eps / h: the total is a
    # V whose bottom lies near eps^(1/3), ~6e-6 in float64 and ~5e-3 in float32.
    W, x, labels = random_case(11, 4, 3, 8)
    errors, best = {}, {}
    for dtype in (F64, F32):
        Wd, xd = W.astype(dtype), x.astype(dtype)
        reference = analytic_gradient(Wd.astype(F64), xd.astype(F64), labels)
        errors[dtype] = e = [
            relative_error(ENGINES[name](Wd, xd, labels, h), reference) for h in STEPS
        ]
        i = int(np.argmin(e))
        best[dtype] = STEPS[i]
        # The bottom is well inside, with both arms rising at least 30x above it ...
        assert 0 < i < len(STEPS) - 1
        assert e[0] > 30 * e[i] and e[-1] > 30 * e[i]
        # ... and near eps^(1/3).
        assert best_step(dtype) / 10 <= STEPS[i] <= best_step(dtype) * 10
    assert best[F32] >= 100 * best[F64]  # measured: 1e-2 against 1e-5
    # The right arm is truncation: the same in both dtypes at h = 1 and 0.1, and falling
    # by two decades per decade of h (measured in float64, where rounding is far below).
    np.testing.assert_allclose(errors[F32][:3:2], errors[F64][:3:2], rtol=0.05)
    assert errors[F64][2] / errors[F64][4] == pytest.approx(100, rel=0.05)


# -- the smallest step that resolves W ----------------------------------------------------

RESOLVE_CASES = [
    [[0.5, -1.0]],  # powers of two: exactly half a spacing is a tie that rounds back
    [[1.0 + 2**-52, 0.25]],  # an odd last bit: the tie rounds away, half a spacing is enough
    [[3.0, -2.9], [0.0, 1e-300]],
    [[1048575.7, 0.1]],
    [[1e300, -1.0]],
]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("W", [*RESOLVE_CASES, np.random.default_rng(5).standard_normal((4, 3))])
def test_smallest_resolving_h_is_the_smallest(W, dtype):
    with np.errstate(over="ignore"):
        W = np.asarray(W, dtype=dtype)
    h = smallest_resolving_h(W)
    if not np.isfinite(W).all():  # 1e300 in float32
        assert h == np.inf
        return
    assert type(h) is float and dtype.type(h) == h  # representable in W's dtype
    # W +- h, as the loop computes it (a Python float meets W's dtype), moves every weight
    assert np.all(W + h != W) and np.all(W - h != W)
    below = np.nextafter(dtype.type(h), dtype.type(0))
    assert np.any(W + below == W) or np.any(W - below == W)


def test_smallest_resolving_h_edges():
    assert smallest_resolving_h(np.zeros((2, 3))) == 5e-324
    assert smallest_resolving_h(np.zeros((2, 3), dtype=np.float32)) == float(np.float32(1e-45))
    assert smallest_resolving_h(np.array([[1.0, np.nan]])) == np.inf
    for other in (np.int64, np.float16, np.longdouble):  # these perturb in float64
        W = np.array([[3, -7]], dtype=other)
        expected = np.nextafter(2.0**-51, 1.0)  # 7 + 2**-51 is a tie that rounds back to 7
        assert smallest_resolving_h(W) == smallest_resolving_h(W.astype(F64)) == expected
    # W must move in the loop at h = smallest_resolving_h(W), and not at a smaller h
    W, x, labels = random_case(2, 3, 4, 6)
    # Adding a constant to a row of W leaves softmax unchanged: row 1 near 3000 keeps
    # its gradient, and the spacing of floats in [2048, 4096), 4.5e-13: h = 2.3e-13
    # moves it both ways, 0.9 h neither way.
    W[1] += 3000.0 - W[1].max()
    h = smallest_resolving_h(W)
    assert h == pytest.approx(2.27e-13, rel=1e-2)
    np.testing.assert_array_equal(loop_gradient(W, x, labels, 0.9 * h)[1], 0.0)
    assert np.all(loop_gradient(W, x, labels, h)[1] != 0.0)


# -- the advised step: one function, rounded up, enough as printed -------------------------


@pytest.mark.parametrize(
    ("h_min", "printed"),
    [
        (2.0**-54, "5.6e-17"),  # max|W| in [0.5, 1): the book's W
        (2.0**-53 * (1 + 2**-52), "1.2e-16"),
        (3.1e-9, "3.1e-09"),  # the float 3.1e-9 reads back as itself: no need to go up
        (float(np.float32(2.0**-25)), "3e-08"),  # float32, max|W| in [0.5, 1)
        (5e-324, "5e-324"),
        (float(np.float32(1e-45)), "1.5e-45"),
        (1.0, "1.0"),
        (12345.0, "13000.0"),
    ],
)
def test_advised_h_is_rounded_up_to_two_digits(h_min, printed):
    assert repr(advised_h(h_min)) == printed and float(printed) >= h_min


# Below the top binade: at the largest float, w + h can only round to w or to inf.
finite64 = st.floats(-(2.0**1000), 2.0**1000, allow_nan=False, width=64)
finite32 = st.floats(-(2.0**126), 2.0**126, allow_nan=False, width=32)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    dtype=st.sampled_from([F32, F64]),
    data=st.data(),
    scheme=st.sampled_from(sorted(SCHEMES)),
)
def test_the_advised_h_as_printed_is_accepted(dtype, data, scheme):
    # For any W and x, in either dtype and for every scheme: the h the refusal advises,
    # read back from its printed text, passes the same refusal.
    elements = finite32 if dtype == F32 else finite64
    W = data.draw(arrays(dtype, st.tuples(st.integers(1, 3), st.integers(2, 3)), elements=elements))
    x = data.draw(
        arrays(dtype, st.tuples(st.integers(1, 3), st.just(W.shape[0])), elements=elements)
    )
    rule = SCHEMES[scheme]
    message = rule.too_small(0.0, W, x)
    assert message is not None
    printed = re.fullmatch(r".*; use h >= (\S+)", message).group(1)
    assert rule.too_small(float(printed), W, x) is None
    if not rule.complex_step:  # and the loop's w +- h moves every weight, as it computes
        h = float(printed)
        assert np.all(W + h != W) and np.all(W - h != W)
    else:  # h x is a normal float for every x != 0
        with np.errstate(over="ignore"):  # x over 70 decades: the largest h x may overflow
            hx = np.abs(dtype.type(float(printed)) * x[x != 0])
        assert np.all(hx >= np.finfo(dtype).tiny)


def test_smallest_unflowing_h_is_the_smallest():
    for dtype in (F32, F64):
        x = np.array([[0.6, -0.9], [0.0, 3e-5]], dtype=dtype)
        h = smallest_unflowing_h(x, dtype)
        tiny = np.finfo(dtype).tiny
        assert dtype.type(h) == h and np.all(np.abs(dtype.type(h) * x[x != 0]) >= tiny)
        below = np.nextafter(dtype.type(h), dtype.type(0))
        assert np.any(np.abs(below * x[x != 0]) < tiny)
    assert smallest_unflowing_h(np.zeros((2, 2)), F64) == 5e-324
    assert smallest_unflowing_h(np.array([[np.inf]]), F64) == np.inf
