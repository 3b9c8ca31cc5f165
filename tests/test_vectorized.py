"""Tests of numgrad.vectorized: the column-shift engine against the loop and an exact reference.

Near 1 (``h max|x| <= 1``) and wide steps alike, chunked work, product groups, memory.
"""

import tracemalloc

import numpy as np
import pytest

from numgrad.gradient import loop_gradient, relative_error
from numgrad.vectorized import vectorized_gradient
from tests.reference import (
    EXTENDED,
    EXTREME_LABELS,
    EXTREME_W,
    EXTREME_X,
    extended_central_difference,
    max_abs_diff,
    random_case,
)


@pytest.mark.parametrize("h", [1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
def test_vectorized_matches_loop_across_step_sizes(h):
    W, x, labels = random_case(7, 20, 6, 16)
    np.testing.assert_allclose(
        vectorized_gradient(W, x, labels, h), loop_gradient(W, x, labels, h), rtol=0, atol=1e-9
    )


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
@pytest.mark.parametrize("h", [1e-2, 1e-4, 1e-7])
@pytest.mark.parametrize("case", [(2, 3, 1), (2, 3, 32), (20, 10, 16)])
def test_vectorized_against_extended_precision(case, h):
    # At h = 1e-7 the loop itself carries rounding noise of ~1e-16 * loss / h
    # (measured up to 2e-8 on 50x10), so the exact central difference is the
    # reference there; the vectorized engine is within its own floor of ~1e-9.
    W, x, labels = random_case(sum(case), *case)
    reference = extended_central_difference(W, x, labels, h)
    assert max_abs_diff(vectorized_gradient(W, x, labels, h), reference) < 1e-9
    assert max_abs_diff(loop_gradient(W, x, labels, h), reference) < 1e-7


def tiled_case(seed, n_small, n_classes, batch, repeats):
    """A wide problem whose gradient is a small one's, repeated: a cheap exact reference.

    ``x`` repeats the small problem's columns ``repeats`` times and ``W`` holds the
    small weights in its first rows, zeros elsewhere: the logits are the small
    problem's, and perturbing ``W[i, j]`` moves them as perturbing ``W_small[i %
    n_small, j]`` does. So every block of ``n_small`` gradient rows must equal the
    small gradient, which the loop computes in ``2 * n_small * n_classes`` passes.
    """
    W_small, x_small, labels = random_case(seed, n_small, n_classes, batch)
    W = np.zeros((n_small * repeats, n_classes))
    W[:n_small] = W_small
    return W, np.tile(x_small, repeats), labels, loop_gradient(W_small, x_small, labels)


@pytest.mark.parametrize(
    ("n_classes", "batch", "repeats"),
    [
        (3, 5, 11_000),  # 132,000 weights: more inputs than one work block holds
        (10, 300, 196),  # 784 inputs: blocks of 16 rows, product groups of 256 and 44 rows
    ],
)
def test_vectorized_chunked_work_matches_the_loop(n_classes, batch, repeats):
    W, x, labels, small = tiled_case(n_classes + batch, 4, n_classes, batch, repeats)
    grad = vectorized_gradient(W, x, labels)
    blocks = grad.reshape(repeats, 4, n_classes)
    np.testing.assert_allclose(blocks, np.broadcast_to(small, blocks.shape), rtol=0, atol=1e-9)


def test_vectorized_large_batch_spans_product_groups():
    W, x, labels = random_case(4, 6, 5, 600)  # > 256 samples: more than one product
    np.testing.assert_allclose(
        vectorized_gradient(W, x, labels), loop_gradient(W, x, labels), rtol=0, atol=1e-9
    )


def test_vectorized_product_groups_avoid_underflow():
    # h * |x| = 1 (the kernel's limit) and a rare true class: every sample's ratio
    # for W[0, true] is ~e^-2, so one product over 600 samples would underflow to 0
    # (log -> -inf); products over groups of at most 256 samples stay near e^-512.
    W = np.array([[0.0, 0.0, -5.0]])
    x = np.ones((600, 1))
    labels = np.full(600, 2)
    with np.errstate(all="raise"):
        vec = vectorized_gradient(W, x, labels, h=1.0)
    np.testing.assert_allclose(vec, loop_gradient(W, x, labels, h=1.0), rtol=0, atol=1e-9)


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
@pytest.mark.parametrize("gap", [10.0, 30.0, 46.0])
@pytest.mark.parametrize("h", [1e-4, 1e-2])
def test_rows_dominated_by_one_class(gap, h):
    # Class 0 leads by e^gap (e^46 ~ 1e20: 1 + e^-46 == 1 in float64). The other
    # classes' probabilities and the gradients they carry are tiny but must not be lost.
    W = np.array([[gap, 0.0, -3.0], [0.0, gap / 2, 1.0]])
    x = np.array([[1.0, 0.2], [0.9, -0.5], [1.0, 1.0], [0.3, 1.0]])
    for labels in ([0, 1, 2, 0], [1, 1, 2, 2], [0, 0, 0, 0]):
        labels = np.array(labels)
        reference = extended_central_difference(W, x, labels, h)
        assert max_abs_diff(vectorized_gradient(W, x, labels, h), reference) < 1e-11


def test_vectorized_either_side_of_its_near_one_limit():
    # h * max|x| = 1 is where the near-1 form hands over to the wide-step form.
    W, x, labels = random_case(5, 3, 4, 5)
    x = x * 10
    h_limit = 1.0 / np.abs(x).max()
    for h in (0.999 * h_limit, h_limit, 1.001 * h_limit, 2 * h_limit):
        loop = loop_gradient(W, x, labels, h)
        assert relative_error(vectorized_gradient(W, x, labels, h), loop) < 1e-12


# -- wide steps: h * max|x| > 1 ---------------------------------------------------------


def wide_case(kind):
    """Inputs whose steps h * |x| reach beyond the near-1 form (h * max|x| > 1)."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    W = rng.standard_normal((5, 4))
    x = rng.standard_normal((12, 5))
    labels = rng.integers(0, 4, 12)
    h = 0.1
    if kind == "mixed-sign":
        x = 20 * x
    elif kind == "row-scales":  # logits from ~1e-3 to ~1e3 in one batch
        x = x * np.array([1e-3, 0.1, 1, 3, 10, 30, 100, 300, 1, 1, 10, 0.01])[:, None]
    elif kind == "blank-rows":
        x = 20 * x
        x[[0, 3, 4, 11]] = 0.0
    elif kind == "negative":
        x = -20 * np.abs(x)
        x[0, 0] = 5.0
    elif kind == "pixels-h-1":  # pixel-like data scaled by 50, h = 1: steps up to 50
        W, x, h = 0.01 * W, 50 * rng.random((12, 5)), 1.0
    elif kind == "beyond-exp-range":  # steps of ~1300: exp(h x) is not a float64
        W, x = 0.01 * W, 255 * 50 * rng.random((12, 5))
    return W, x, labels, h


WIDE_KINDS = [
    "mixed-sign",
    "row-scales",
    "blank-rows",
    "negative",
    "pixels-h-1",
    "beyond-exp-range",
]


@pytest.mark.parametrize("kind", WIDE_KINDS)
def test_wide_steps_agree_with_the_loop(kind):
    W, x, labels, h = wide_case(kind)
    assert h * np.abs(x).max() > 1  # the wide-step form
    with np.errstate(all="raise"):  # no overflow, no nan, whatever the step
        vec = vectorized_gradient(W, x, labels, h)
        loop = loop_gradient(W, x, labels, h)
    assert np.abs(loop).max() > 1e-4  # a gradient to agree on, not rounding noise
    assert relative_error(vec, loop) <= 1e-9  # measured <= 2e-11 (the loop's own noise)


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
@pytest.mark.parametrize("kind", WIDE_KINDS)
def test_wide_steps_against_extended_precision(kind):
    W, x, labels, h = wide_case(kind)
    reference = extended_central_difference(W, x, labels, h)
    vec = vectorized_gradient(W, x, labels, h)
    assert relative_error(vec, reference.astype(np.float64)) < 1e-11  # measured <= 5e-13
    assert max_abs_diff(vec, reference) < 1e-13


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
@pytest.mark.parametrize("h", [0.5, 1000.0, 1700.0])
def test_wide_steps_bring_back_classes_whose_exp_underflowed(h):
    # Class 0 leads by 800 in two rows: the others' exp(z - max z) is 0 in float64,
    # yet a step of 1000 moves class 0 below them. The extended reference holds e^-800.
    W = np.array([[800.0, 0.0, -5.0], [0.0, 1.0, 0.0]])
    x = np.array([[1.0, 0.0], [1.0, 2.0], [0.5, -1.0], [1.0, 0.0]])
    for labels in ([1, 0, 2, 0], [0, 0, 0, 0], [2, 1, 1, 2]):
        labels = np.array(labels)
        with np.errstate(all="raise"):
            vec = vectorized_gradient(W, x, labels, h)
        reference = extended_central_difference(W, x, labels, h)
        assert max_abs_diff(vec, reference) < 1e-15
        np.testing.assert_allclose(vec, loop_gradient(W, x, labels, h), rtol=1e-12, atol=1e-17)


def test_wide_steps_product_groups_avoid_underflow():
    # Every sample's ratio for W[0, 2] is ~1e-7 (y_t goes from ~1 to ~e^-30): over 600
    # samples the product would be e^-9700; groups of at most 43 stay above e^-700.
    W = np.array([[0.0, 0.0, -0.5]])
    x = np.full((600, 1), 20.0)
    labels = np.full(600, 2)
    with np.errstate(all="raise"):
        vec = vectorized_gradient(W, x, labels, h=1.0)
    loop = loop_gradient(W, x, labels, h=1.0)
    assert relative_error(vec, loop) < 1e-14
    assert vec[0, 2] == pytest.approx(-8.059, abs=1e-3)


def test_vectorized_peak_memory_784x10_batch_1000():
    W, x, labels = random_case(6, 784, 10, 1000)
    tracemalloc.start()
    try:
        vectorized_gradient(W, x, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200e6
    assert peak < 20e6  # measured ~4 MB: chunking, not luck, keeps it small


@pytest.mark.skipif(not EXTENDED, reason="np.longdouble is not extended precision here")
def test_extreme_logits_vectorized_against_extended_precision():
    reference = extended_central_difference(EXTREME_W, EXTREME_X, EXTREME_LABELS, 1e-4)
    grad = vectorized_gradient(EXTREME_W, EXTREME_X, EXTREME_LABELS, 1e-4)
    assert max_abs_diff(grad, reference) < 1e-11  # measured ~2e-13; the loop ~2e-11


def test_float32_halves_the_kernels_memory():
    W, x, labels = random_case(6, 784, 10, 1000)
    peaks = {}
    for dtype in (np.float64, np.float32):
        Wd, xd = W.astype(dtype), x.astype(dtype)
        tracemalloc.start()
        try:
            vectorized_gradient(Wd, xd, labels)
            peaks[dtype] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[np.float32] < 0.6 * peaks[np.float64]  # measured ~0.5
