"""Tests of numgrad.functions against the book's printed numbers and direct formulas."""

import math

import numpy as np
import pytest

from numgrad.functions import CEE_DELTA, cross_entropy_error, softmax

# The book's ch04 example of cross_entropy_error (10 classes, true class 2).
BOOK_Y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])


def one_hot(label, n_classes=10):
    t = np.zeros(n_classes)
    t[label] = 1
    return t


def test_softmax_1d_matches_formula():
    x = np.array([0.3, 2.9, 4.0])
    expected = np.exp(x) / np.exp(x).sum()
    np.testing.assert_allclose(softmax(x), expected, rtol=1e-15)
    assert softmax(x).sum() == pytest.approx(1.0, abs=1e-15)


def test_softmax_2d_is_row_wise():
    x = np.random.default_rng(0).standard_normal((5, 4)) * 3
    y = softmax(x)
    assert y.shape == x.shape
    for row_x, row_y in zip(x, y, strict=True):
        np.testing.assert_allclose(row_y, softmax(row_x), rtol=1e-15)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_is_shift_invariant_and_does_not_modify_input():
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    before = x.copy()
    np.testing.assert_allclose(softmax(x + 1000.0), softmax(x), rtol=1e-12)
    np.testing.assert_array_equal(x, before)


def test_softmax_huge_logits_are_finite_even_under_raise():
    # The max shift avoids overflow; the underflow of exp(-2e4) to 0 is intended and
    # must not raise for callers that turn floating-point warnings into errors.
    with np.errstate(all="raise"):
        y1 = softmax(np.array([1e4, -1e4]))
        y2 = softmax(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]]))
    np.testing.assert_array_equal(y1, [1.0, 0.0])
    np.testing.assert_array_equal(y2[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(y2[1], [1 / 3] * 3, rtol=1e-15)


def test_softmax_accepts_lists_and_integers():
    np.testing.assert_allclose(softmax([0, 0]), [0.5, 0.5])


def test_cross_entropy_error_book_examples():
    # Printed in the book: 0.51082545709933802 and 2.3025840929945458.
    assert cross_entropy_error(BOOK_Y, one_hot(2)) == pytest.approx(0.51082545709933802, abs=1e-15)
    assert cross_entropy_error(BOOK_Y, one_hot(7)) == pytest.approx(2.3025840929945458, abs=1e-15)


def test_cross_entropy_error_is_exactly_the_books_formula():
    y = softmax(np.random.default_rng(1).standard_normal((6, 4)))
    labels = np.array([0, 3, 1, 1, 2, 0])
    expected = -np.sum(np.log(y[np.arange(6), labels] + 1e-7)) / 6
    assert cross_entropy_error(y, labels) == expected
    assert cross_entropy_error(y, np.eye(4)[labels]) == expected


@pytest.mark.parametrize("label", [2, np.int64(2), np.array(2), np.array([2])])
def test_cross_entropy_error_single_sample_label_forms(label):
    assert cross_entropy_error(BOOK_Y, label) == cross_entropy_error(BOOK_Y, one_hot(2))


def test_cross_entropy_error_batch_of_one_equals_single_sample():
    assert cross_entropy_error(BOOK_Y[None, :], np.array([2])) == cross_entropy_error(BOOK_Y, 2)


def test_cross_entropy_error_zero_probability_is_finite():
    # The 1e-7 inside the log turns log(0) into log(1e-7).
    with np.errstate(all="raise"):
        loss = cross_entropy_error(np.array([1.0, 0.0]), np.array([0, 1]))
    assert loss == pytest.approx(-math.log(CEE_DELTA), rel=1e-15)
    assert CEE_DELTA == 1e-7


def test_cross_entropy_error_single_class():
    # One class: probabilities are all 1; labels of shape (batch,) must not be
    # mistaken for one-hot rows (the book's t.size == y.size test would).
    y = np.ones((3, 1))
    expected = -math.log(1 + 1e-7)
    assert cross_entropy_error(y, np.array([0, 0, 0])) == pytest.approx(expected)
    assert cross_entropy_error(y, np.ones((3, 1))) == pytest.approx(expected)
