"""The descent loop: records, stopping rules, divergence, the in-place contract."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

import numgrad.descent
from numgrad.descent import STOP_CONVERGED, STOP_STEPS, Descent, Diverged, StepTooSmall
from numgrad.gradient import ENGINES, analytic_gradient, loss_from_labels, vectorized_gradient
from numgrad.precision import smallest_resolving_h

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


# -- steps too small to resolve W or the loss ---------------------------------------------

NUMERICAL = ["loop", "vectorized"]


@pytest.mark.parametrize("method", NUMERICAL)
@pytest.mark.parametrize("tol", [1e-6, 0.0])
def test_a_step_that_does_not_resolve_w_is_not_convergence(method, tol):
    # W +- 1e-20 == W in float64: every difference quotient is exactly 0. That is
    # neither a converged run (tol > 0) nor 1000 steps that leave W unchanged (tol = 0).
    W = BOOK_W.copy()
    d = Descent(W, X, LABELS, ENGINES[method], h=1e-20, lr=0.1, steps=1000, tol=tol)
    message = "at step 0 gradient.h=1e-20 does not resolve W (max|W| = 1): use h >= 5.6e-17"
    with pytest.raises(StepTooSmall, match=f"^{re.escape(message)}$") as info:
        list(d)
    error = info.value
    assert (error.step, error.h, error.weight_max) == (0, 1e-20, BOOK_W.max())
    assert error.h_min == smallest_resolving_h(BOOK_W) == pytest.approx(5.55e-17, rel=1e-3)
    assert error.hidden == pytest.approx(np.abs(analytic_gradient(BOOK_W, X, LABELS)).max())
    assert d.stop_reason is None and d.steps_taken == 0
    np.testing.assert_array_equal(W, BOOK_W)


@pytest.mark.parametrize("method", NUMERICAL)
def test_a_step_the_loss_does_not_resolve(method):
    # W = 0 moves by any h > 0, but the loss changes by ~1e-18: below its rounding.
    d = Descent(np.zeros((2, 3)), X, LABELS, ENGINES[method], h=1e-18, lr=0.1, steps=5)
    message = (
        "at step 0 every difference quotient with gradient.h=1e-18 is exactly 0 but the "
        "analytic gradient reaches 0.6: the loss does not resolve so small a step; use a "
        "larger h (near 6e-06 is usually best)"
    )
    with pytest.raises(StepTooSmall, match=f"^{re.escape(message)}$") as info:
        list(d)
    assert info.value.h_min == 5e-324 and info.value.best_h == pytest.approx(6.06e-6, rel=1e-3)


def test_w_that_outgrows_h_during_the_descent():
    # Softmax ignores a constant added to all of a row's columns: W[0] sits just below
    # 2^20 with a healthy gradient, and h = 1e-10 resolves it (half a spacing: 5.8e-11).
    # The first update carries a weight past 2^20, where half a spacing is 1.2e-10.
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((10, 2)), rng.integers(0, 3, 10)
    W0 = 0.1 * rng.standard_normal((2, 3))
    W0[0] += 2.0**20 - 0.5 - W0[0].max()
    d = Descent(W0.copy(), x, labels, ENGINES["loop"], h=1e-10, lr=5, steps=8)
    seen = []
    with pytest.raises(StepTooSmall) as info:
        seen.extend(d)
    error = info.value
    assert [r.step for r in seen] == [0] and error.step == 1 == d.steps_taken
    assert str(error) == (
        "at step 1 gradient.h=1e-10 no longer resolves W (max|W| = 1e+06): use h >= 1.2e-10"
    )
    assert error.weight_max > 2.0**20 and error.h_min == 2.0**-33 > error.h
    # The vectorized engine never forms W +- h: no zeros, a true gradient, no error.
    W = W0.copy()
    records = list(Descent(W, x, labels, ENGINES["vectorized"], h=1e-10, lr=5, steps=8))
    assert len(records) == 9 and np.abs(W).max() > 2.0**20


def test_an_exact_optimum_with_a_too_small_h_still_converges():
    # At the saturated single sample the analytic gradient is exactly 0 too (see above):
    # zeros that hide nothing are a genuine optimum, also for tol > 0.
    W = BOOK_W.copy()
    records = list(Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=1e308, steps=3, tol=1e-9))
    assert records[-1].grad_norm == 0.0 and len(records) == 2
    assert smallest_resolving_h(W) > 1e-4  # W ~ 1e307: h = 1e-4 resolves nothing


@pytest.mark.parametrize(("lr", "tol", "raises"), [(0.0, 1e-6, True), (0.0, 0.0, False)])
def test_zeros_that_move_nothing_are_harmless_unless_they_stop_the_run(lr, tol, raises):
    # lr = 0: no update moves W, so zeros change nothing, except a stop on tol.
    d = Descent(BOOK_W.copy(), X, LABELS, ENGINES["loop"], h=1e-20, lr=lr, steps=3, tol=tol)
    if raises:
        with pytest.raises(StepTooSmall):
            list(d)
    else:
        assert len(list(d)) == 4 and d.stop_reason == STOP_STEPS


def test_the_zero_check_costs_no_pass_in_the_normal_case(monkeypatch):
    # Blank inputs give exact zeros in every step's gradient; W is resolved, so the
    # analytic gradient is never computed (no extra forward pass).
    calls = []
    original = numgrad.descent.analytic_gradient
    monkeypatch.setattr(
        numgrad.descent, "analytic_gradient", lambda *a: calls.append(1) or original(*a)
    )
    rng = np.random.default_rng(2)
    x, labels = rng.random((20, 5)), rng.integers(0, 3, 20)
    x[:, 2] = 0.0  # a blank pixel: row 2 of every gradient is exactly 0
    d = Descent(
        rng.standard_normal((5, 3)), x, labels, vectorized_gradient, h=1e-4, lr=0.5, steps=20
    )
    assert all(r.grad_max_abs > 0 for r in d)
    assert np.all(d.last_gradient[2] == 0.0) and calls == []
    list(
        Descent(BOOK_W.copy(), X, LABELS, vectorized_gradient, h=1e-4, lr=0.5, steps=3, check=True)
    )
    assert len(calls) == 4  # with check=True, one per evaluation, shared with the zero check


def test_errors_survive_pickling():
    for error in (Diverged(3, "loss", np.inf), StepTooSmall(2, 1e-20, 1.0, 5.6e-17, 0.6, 6e-6)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)


def test_a_too_small_h_with_a_huge_lr_raises_no_warning():
    # lr * g overflows float64 here: the update would have sent W to -inf.
    W, x = BOOK_W.copy(), 10 * X
    with np.errstate(all="raise"), pytest.raises(StepTooSmall, match="does not resolve W"):
        list(Descent(W, x, LABELS, ENGINES["loop"], h=1e-20, lr=1e308, steps=3))
