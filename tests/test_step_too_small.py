"""A step h too small for W or for the loss: StepTooSmall, never a false convergence.

References: the analytic gradient (what the zeros hide), smallest_resolving_h, and
softmax's invariance to a constant added to a row of W (large weights, live gradient).
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

import numgrad.descent
from numgrad.descent import STOP_STEPS, Descent, StepTooSmall
from numgrad.gradient import ENGINES, analytic_gradient, vectorized_gradient
from numgrad.precision import smallest_resolving_h
from tests.conftest import NUMGRAD, numgrad_env

BOOK_W = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])
X, LABELS = np.array([[0.6, 0.9]]), np.array([2])


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
    # The saturated single sample: all zeros from step 1 on, checked against the analytic
    # gradient. With check=True that is the check's own reference: one per evaluation.
    W = BOOK_W.copy()
    list(Descent(W, X, LABELS, vectorized_gradient, h=1e-4, lr=1e308, steps=3, check=True))
    assert len(calls) == 4


def test_an_h_exactly_at_the_resolving_step_is_trusted(monkeypatch):
    calls = []
    original = numgrad.descent.analytic_gradient
    monkeypatch.setattr(
        numgrad.descent, "analytic_gradient", lambda *a: calls.append(1) or original(*a)
    )
    rng = np.random.default_rng(3)
    x, labels = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    x[:, 2] = 0.0  # exact zeros in row 2 of the gradient
    W = rng.standard_normal((3, 3))
    W[0] += 3000.0 - W[0].max()  # softmax ignores it; half a spacing there: 2.3e-13
    h = smallest_resolving_h(W)
    (record,) = Descent(W, x, labels, ENGINES["loop"], h=h, lr=0.1, steps=0)
    assert record.grad_max_abs > 0 and calls == []
    # An h that resolves W is never told to grow to the h it already has.
    error = StepTooSmall(0, h, 3000.0, h, 0.5, 6.06e-6)
    assert "every difference quotient" in str(error) and "use h >=" not in str(error)


def test_zeros_that_cannot_move_a_float32_weight_are_harmless():
    # lr * g ~ 5e-13: below float32's rounding of W (~6e-8), above float64's (~1e-16).
    # Whether a zero hides anything is judged in W's dtype, as the update would apply it.
    W32 = BOOK_W.astype(np.float32)
    records = list(Descent(W32, X, LABELS, ENGINES["loop"], h=1e-20, lr=1e-12, steps=3))
    assert len(records) == 4 and all(r.grad_norm == 0.0 for r in records)
    with pytest.raises(StepTooSmall):
        list(Descent(BOOK_W.copy(), X, LABELS, ENGINES["loop"], h=1e-20, lr=1e-12, steps=3))


def test_a_too_small_h_with_a_huge_lr_raises_no_warning():
    # lr * g overflows float64 here: the update would have sent W to -inf.
    W, x = BOOK_W.copy(), 10 * X
    with np.errstate(all="raise"), pytest.raises(StepTooSmall, match="does not resolve W"):
        list(Descent(W, x, LABELS, ENGINES["loop"], h=1e-20, lr=1e308, steps=3))


@pytest.mark.parametrize(
    ("h_min", "advised"),
    [
        (2.0**-53 * (1 + 2**-52), "1.2e-16"),
        (2.0**-54, "5.6e-17"),
        (2.0**-33, "1.2e-10"),
        (3.1e-9, "3.1e-09"),
    ],
)
def test_the_advised_step_is_rounded_up(h_min, advised):
    # The message's "use h >= ..." must be enough as printed: never rounded down below h_min.
    error = StepTooSmall(4, 1e-20, 2.0, h_min, 0.5, 6.06e-6)
    assert str(error).endswith(f"use h >= {advised}") and float(advised) >= h_min


# -- per scheme: the complex step's own limit and advice ------------------------------------


def test_the_complex_step_is_judged_by_its_own_limit():
    from numgrad.schemes import SCHEMES

    complex_step = SCHEMES["complex"]
    # W +- 1e-20 == W for the real steps, but the complex step never adds h to W's real
    # part: 1e-20 gives the gradient, no StepTooSmall.
    (record,) = Descent(BOOK_W.copy(), X, LABELS, complex_step.vectorized, h=1e-20, lr=0.1,
                        steps=0, check=True, scheme=complex_step)  # fmt: skip
    assert record.grad_rel_error <= 1e-14
    # Far below its limit h x underflows to 0: every quotient 0, and the message says why.
    x = X * 1e-10
    h_min = complex_step.h_min(BOOK_W, x)
    assert h_min == pytest.approx(2.0**-1022 / 0.6e-10, rel=1e-15)
    d = Descent(BOOK_W.copy(), x, LABELS, complex_step.loop, h=1e-320, lr=0.1, steps=3,
                scheme=complex_step)  # fmt: skip
    message = (
        f"at step 0 gradient.h={1e-320:g} is too small for the complex step (h·x underflows): "
        "use h >= 3.8e-298"
    )
    with pytest.raises(StepTooSmall, match=f"^{re.escape(message)}$") as info:
        list(d)
    assert info.value.scheme == "complex" and info.value.h_min == h_min
    assert info.value.best_h == np.finfo(np.float64).eps  # the complex step's textbook h
    import pickle

    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == message and again.scheme == "complex"
    # At the limit itself h x is normal: zeros there are the loss's, not the step's.
    at_limit = StepTooSmall(0, h_min, 1.0, h_min, 0.5, 2.2e-16, "complex")
    assert str(at_limit).startswith("at step 0 every difference quotient with gradient.h=")


@pytest.mark.parametrize("name", ["forward", "central4", "complex"])
@pytest.mark.parametrize("method", NUMERICAL)
def test_the_check_works_with_every_scheme(name, method):
    from numgrad.schemes import SCHEMES, engine_for

    scheme = SCHEMES[name]
    W = BOOK_W.copy()
    h = scheme.auto_h(W, X)
    records = list(Descent(W, X, LABELS, engine_for(method, name), h=h, lr=0.5, steps=3,
                           check=True, scheme=scheme))  # fmt: skip
    assert len(records) == 4
    bound = {"forward": 1e-6, "central4": 1e-10, "complex": 1e-14}[name]
    assert all(r.grad_rel_error <= bound for r in records)
    # the forward difference's best h is not central's
    # W = 0 moves by any h, but the loss does not resolve 1e-18: the advice is the scheme's.
    too_small = Descent(np.zeros((2, 3)), X, LABELS, engine_for(method, name), h=1e-18, lr=0.1,
                        steps=1, scheme=scheme)  # fmt: skip
    if name == "complex":
        assert next(iter(too_small)).grad_norm > 0  # no cancellation: 1e-18 is fine
    elif method == "vectorized":  # (the loops' rounding noise leaves some quotients non-zero)
        with pytest.raises(StepTooSmall, match=rf"near {scheme.textbook_h(np.float64):.1g} "):
            list(too_small)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("h", "line"),
    [
        ("1e-7", "at step 0 every difference quotient with gradient.h=1e-07 is exactly 0 but "
                 "the analytic gradient reaches 0.42: the loss does not resolve so small a "
                 "step; use a larger h (near 0.005 is usually best)"),
        ("1e-8", "invalid gradient.h=1e-08: does not resolve W in float32 (max|W| = 0.64: "
                 "some w ± h == w); use h >= 3e-08"),
    ],
)  # fmt: skip
def test_the_two_float32_limits_the_readme_describes(tmp_path, h, line):
    # The article in float32, as the README's precision sweep runs it: at 1e-7 W moves but
    # the loss does not; at 1e-8 W itself does not move. Each has its own advice.
    argv = [NUMGRAD, "gradient.dtype=float32", f"gradient.h={h}", "gradient.check=true",
            "optimizer.steps=0", "tracking.enabled=false", f"hydra.run.dir={tmp_path}/run"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=numgrad_env(), capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2 if h == "1e-8" else 1, f"numgrad: error: {line}\n")
