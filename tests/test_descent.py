"""The descent loop: records, stopping rules, divergence, the in-place contract."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from numgrad.descent import STOP_CONVERGED, STOP_STEPS, Descent, Diverged, StepTooSmall
from numgrad.gradient import ENGINES, analytic_gradient, loss_from_labels, vectorized_gradient

BOOK_W = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])
X, LABELS = np.array([[0.6, 0.9]]), np.array([2])


def test_steps_zero_evaluates_w0_only():
    W = BOOK_W.copy()
    d = Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=0.1, steps=0)
    records = list(d)
    assert [r.step for r in records] == [0]
    assert d.steps_taken == 0 and d.stop_reason == STOP_STEPS
    assert np.array_equal(W, BOOK_W)  # no update
    assert records[0].loss == pytest.approx(0.92806853663411326, abs=1e-6)
    np.testing.assert_allclose(
        d.last_gradient, ENGINES["loop"](BOOK_W, X, LABELS, 1e-4), atol=1e-12
    )


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_descent_matches_a_hand_written_loop(method):
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((3, 4))
    x, labels = rng.standard_normal((10, 3)), rng.integers(0, 4, 10)
    W = W0.copy()
    d = Descent(W, x, labels, ENGINES[method], h=1e-5, lr=0.3, steps=7)
    records = list(d)
    reference = W0.copy()
    for _ in range(7):
        reference -= 0.3 * analytic_gradient(reference, x, labels)
    assert [r.step for r in records] == list(range(8)) and d.steps_taken == 7
    np.testing.assert_allclose(W, reference, atol=1e-8)  # W was updated in place
    assert records[-1].loss == pytest.approx(loss_from_labels(W, x, labels), abs=1e-12)
    assert records[-1].weight_norm == pytest.approx(np.linalg.norm(W))
    assert records[0].loss > records[-1].loss
    assert all(r.grad_rel_error is None for r in records)
    assert [r.seconds for r in records] == sorted(r.seconds for r in records)


def test_record_fields():
    W = BOOK_W.copy()
    (record,) = Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=0.1, steps=0, check=True)
    grad = analytic_gradient(BOOK_W, X, LABELS)
    assert record.grad_norm == pytest.approx(np.linalg.norm(grad), rel=1e-6)
    assert record.grad_max_abs == pytest.approx(np.abs(grad).max(), rel=1e-6)
    assert record.accuracy == 1.0  # the book's argmax is 2, the label
    assert 0 < record.grad_rel_error < 1e-6


def test_tol_stops_early():
    W = BOOK_W.copy()
    d = Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=1.0, steps=10_000, tol=0.05)
    records = list(d)
    assert d.stop_reason == STOP_CONVERGED
    assert records[-1].grad_norm < 0.05 <= records[-2].grad_norm
    assert d.steps_taken == len(records) - 1 < 10_000


def blobs():
    """Three overlapping clusters in 2-D (the core's tests do not depend on numgrad.data)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    x = 2.0 * rng.standard_normal((3, 2))[labels] + rng.standard_normal((60, 2))
    return (x, labels), rng.standard_normal((2, 3))


def test_a_single_sample_does_not_diverge_it_saturates():
    # One step of lr=1e308 fits the book's single sample perfectly: the loss is the
    # book's -log(1 + 1e-7), finite, and the gradient vanishes. Not a divergence.
    W = BOOK_W.copy()
    records = list(Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=1e308, steps=3))
    assert records[-1].loss == pytest.approx(-np.log(1 + 1e-7), rel=1e-9)
    assert records[-1].grad_norm == 0.0 and records[-1].weight_norm > 1e307


def test_divergence_names_the_step_and_keeps_earlier_records():
    (x, t), W = blobs()
    d = Descent(W, x, t, vectorized_gradient, h=1e-4, lr=1e308, steps=50)
    seen = []
    with pytest.raises(
        Diverged, match=r"diverged at step (\d+): (loss|gradient|weight norm) is"
    ) as info:
        for record in d:
            seen.append(record)
    assert info.value.step == len(seen) >= 1
    assert all(np.isfinite(r.loss) for r in seen)


def test_overflow_in_the_update_raises_no_warning():
    (x, t), W = blobs()
    with np.errstate(all="raise"), pytest.raises(Diverged):
        list(Descent(W, x, t, vectorized_gradient, h=1e-4, lr=1e308, steps=50))


def test_weights_beyond_float_range_are_divergence():
    # finite logits and loss, but a norm no float can hold
    W, x = np.full((2, 3), 1.5e308), np.array([[0.1, 0.1]])
    with pytest.raises(Diverged, match="diverged at step 0: weight norm is inf"):
        list(Descent(W, x, LABELS, ENGINES["analytic"], h=1e-4, lr=0.1, steps=1))


# -- float32 ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_float32_descent_stays_float32_and_is_measured_in_float64(method):
    rng = np.random.default_rng(4)
    W64, x, labels = (
        rng.standard_normal((3, 4)),
        rng.standard_normal((10, 3)),
        rng.integers(0, 4, 10),
    )
    W32 = W64.astype(np.float32)
    d32 = Descent(W32, x, labels, ENGINES[method], h=1e-2, lr=0.3, steps=5, check=True)
    records = list(d32)
    assert W32.dtype == np.float32 and d32.x.dtype == np.float32  # x is cast to W's dtype
    assert d32.last_gradient.dtype == np.float32
    for record in records:
        for field in ("loss", "grad_norm", "grad_max_abs", "weight_norm", "accuracy"):
            assert type(getattr(record, field)) is float, field
    # The check's reference is float64, so float32's own rounding shows in the error:
    # ~1e-7 for the analytic engine (0.0 in float64), ~1e-5 for central differences.
    errors = [r.grad_rel_error for r in records]
    assert all(1e-9 < e < 1e-3 for e in errors)
    d64 = Descent(W64.copy(), x, labels, ENGINES[method], h=1e-2, lr=0.3, steps=5, check=True)
    records64 = list(d64)
    if method == "analytic":
        assert all(r.grad_rel_error == 0.0 for r in records64)
    # The two descents follow the same path, to float32 precision.
    np.testing.assert_allclose(W32, d64.W, rtol=0, atol=1e-4)
    assert records[-1].loss == pytest.approx(records64[-1].loss, abs=1e-5)


# -- state, divergence and timing ---------------------------------------------------------


def test_state_before_iteration():
    d = Descent(BOOK_W.copy(), X, LABELS, vectorized_gradient, h=1e-4, lr=0.1, steps=3)
    assert (d.stop_reason, d.steps_taken, d.last_gradient, d.last_record) == (None, 0, None, None)
    assert d.x is X  # already float64: not copied


def test_a_non_finite_gradient_is_divergence():
    # An engine may overflow where the loss does not; its first non-finite value is reported.
    def engine(W, x, labels, h):
        return np.array([[1.0, np.inf, 2.0], [np.nan, -np.inf, 0.0]])

    d = Descent(BOOK_W.copy(), X, LABELS, engine, h=1e-4, lr=0.1, steps=3)
    with pytest.raises(Diverged, match=r"^diverged at step 0: gradient is inf$") as info:
        list(d)
    assert (info.value.step, info.value.quantity, info.value.value) == (0, "gradient", np.inf)


def test_an_update_that_overflows_is_divergence_at_the_next_step_without_warning():
    # lr * grad = 1e308 * +-5 overflows: W becomes +-inf, the next loss is nan.
    W, x = np.zeros((1, 2)), np.array([[10.0]])
    with np.errstate(all="raise"), pytest.raises(Diverged) as info:
        list(Descent(W, x, np.array([0]), ENGINES["analytic"], h=1e-4, lr=1e308, steps=3))
    assert (info.value.step, info.value.quantity) == (1, "loss") and np.isnan(info.value.value)
    assert str(info.value) == "diverged at step 1: loss is nan"
    np.testing.assert_array_equal(W, [[np.inf, -np.inf]])


def test_an_infinite_lr_is_divergence_without_warning():
    # inf * 0 = nan in the update (a blank input gives exact zeros): invalid, not a crash.
    x = np.array([[1.0, 0.0]])
    with np.errstate(all="raise"), pytest.raises(Diverged, match="diverged at step 1"):
        list(Descent(BOOK_W.copy(), x, LABELS, ENGINES["analytic"], h=1e-4, lr=np.inf, steps=3))


def test_seconds_is_the_time_since_the_start():
    start = time.perf_counter()
    records = list(Descent(BOOK_W.copy(), X, LABELS, vectorized_gradient, h=1e-4, lr=0.1, steps=5))
    elapsed = time.perf_counter() - start
    assert 0 <= records[0].seconds <= records[-1].seconds <= elapsed


def test_tol_zero_never_stops_even_on_an_exactly_zero_gradient():
    W = BOOK_W.copy()
    d = Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=1e308, steps=3, tol=0.0)
    records = list(d)
    assert [r.grad_norm for r in records[1:]] == [0.0, 0.0, 0.0]
    assert len(records) == 4 and d.stop_reason == STOP_STEPS


def test_errors_survive_pickling():
    for error in (Diverged(3, "loss", np.inf), StepTooSmall(2, 1e-20, 1.0, 5.6e-17, 0.6, 6e-6)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)
