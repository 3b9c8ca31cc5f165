"""What a run's end adds to its records: status and tags, final metrics, its description.

Pure functions of how the descent ended (no mlflow import): the sink journals what
they return. The description is MLflow's note (tag ``mlflow.note.content``), the
paragraph the run's page shows under "Description".
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from numgrad import signals
from numgrad.tracking.records import describe_error, fit_tag

NOTE_TAG = "mlflow.note.content"
W_METRICS_MAX = 64  # one metric per element of the final W up to this many elements
W_METRIC_PREFIX = "weights.W_final."  # + "i.j"
METHODS = {
    "vectorized": "vectorized central differences",
    "loop": "the book's loop of central differences",
    "analytic": "the analytic gradient",
}


def end_of(
    descent: Any, W_final: np.ndarray | None = None, evaluation: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The outcome of a completed descent, as the end's records need it: stop reason,
    steps, final numbers (and held-out ones, from ``evaluation``), weights, gradient."""
    last, grad = descent.last_record, descent.last_gradient
    evaluation = evaluation or {}
    return {
        "stop_reason": descent.stop_reason,
        "steps_taken": int(descent.steps_taken),
        # A mini-batch run's on its whole training set (evaluation), else the last record's.
        "final_loss": evaluation.get("train_loss", float(last.loss) if last else math.nan),
        "final_accuracy": evaluation.get(
            "train_accuracy", float(last.accuracy) if last else math.nan
        ),
        "final_test_loss": evaluation.get("test_loss"),
        "final_test_accuracy": evaluation.get("test_accuracy"),
        "W_final": np.array(descent.W if W_final is None else W_final, copy=True),
        "gradient": None if grad is None else np.array(grad, copy=True),
    }


def outcome(exc: BaseException | None, end: Mapping[str, Any] | None) -> tuple[str, dict]:
    """Final status and tags for how the run ended (``exc``: what stopped it, if anything)."""
    from numgrad.descent import Diverged, StepTooSmall

    if exc is None:
        return "FINISHED", {"numgrad.stop_reason": str((end or {}).get("stop_reason") or "steps")}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"numgrad.stop_reason": "interrupted"}
    if isinstance(exc, signals.Terminated):
        return "KILLED", {"numgrad.stop_reason": "terminated"}
    if isinstance(exc, Diverged):
        return "FAILED", {
            "numgrad.stop_reason": "diverged",
            "numgrad.diverged.step": str(exc.step),
            "numgrad.diverged.quantity": str(exc.quantity),
            "numgrad.diverged.value": repr(exc.value),
            "numgrad.error": fit_tag(describe_error(exc)),
        }
    if isinstance(exc, StepTooSmall):
        return "FAILED", {
            "numgrad.stop_reason": "step_too_small",
            "numgrad.error": fit_tag(describe_error(exc)),
        }
    if isinstance(exc, Exception):
        return "FAILED", {
            "numgrad.stop_reason": "error",
            "numgrad.error": fit_tag(describe_error(exc)),
        }
    return "KILLED", {"numgrad.stop_reason": type(exc).__name__}


def final_metrics(end: Mapping[str, Any]) -> list[list[Any]]:
    """A finished run's single values ``[key, value, ms, 0]``: all at step 0.

    MLflow's UI draws a metric whose latest step is 0 as a bar (one labelled bar
    per run, comparable across runs in the chart view); at step >= 1 it would be
    a line chart holding one dot. ``weights.W_final.i.j`` sorts after the curves
    (``weight_norm``) on the run's Model metrics tab; ``W_final.i.j`` would sort
    first (capitals first) and ``weights/...`` would get a section drawn above them.

    Examples
    --------
    >>> end = {"final_loss": 0.5, "final_accuracy": 1.0, "steps_taken": 3, "W_final": np.eye(2)}
    >>> [(k, v, step) for k, v, _, step in final_metrics(end)][2:4]
    [('steps_taken', 3.0, 0), ('weights.W_final.0.0', 1.0, 0)]
    """
    ms = int(time.time() * 1000)
    out = [
        ["final_loss", end["final_loss"], ms, 0],
        ["final_accuracy", end["final_accuracy"], ms, 0],
        ["steps_taken", float(end["steps_taken"]), ms, 0],
    ]
    for key in ("final_test_loss", "final_test_accuracy"):  # with a held-out part only
        if end.get(key) is not None:
            out.append([key, float(end[key]), ms, 0])
    W = end["W_final"]
    if W.size <= W_METRICS_MAX:  # sortable and filterable in the runs table
        for index, value in np.ndenumerate(W):
            out.append([W_METRIC_PREFIX + ".".join(map(str, index)), float(value), ms, 0])
    return [m for m in out if math.isfinite(m[1])]


def note(
    config: Mapping[str, Any],
    dataset: Mapping[str, str] | None,
    tags: Mapping[str, str],
    end: Mapping[str, Any] | None,
    last: Any,
) -> str:
    """The run's description: data, net, method, h, lr, steps, stop reason, final numbers.

    ``config`` is the run's config as plain data, ``dataset`` its dataset record,
    ``tags`` those of :func:`outcome`, ``end`` the outcome of a completed descent
    (None if it did not complete) and ``last`` the last step's record, if any.

    Examples
    --------
    >>> config = {"data": {"name": "article"}, "net": {"shape": [2, 3]},
    ...           "gradient": {"method": "vectorized", "h": 1e-4, "dtype": "float64"},
    ...           "optimizer": {"lr": 0.1, "steps": 100}}
    >>> end = {"steps_taken": 100, "final_loss": 0.0588, "final_accuracy": 1.0}
    >>> print(note(config, None, {"numgrad.stop_reason": "steps"}, end, None))
    Gradient descent on article with a 2×3 SimpleNet (softmax(x·W), cross-entropy): \
vectorized central differences, h=0.0001; lr=0.1, 100 of 100 steps, stopped: steps. \
Final loss 0.0588, accuracy 1.0000.
    """
    gradient, optimizer = config.get("gradient", {}), config.get("optimizer", {})
    data = dataset["name"] if dataset else str(config.get("data", {}).get("name", "?"))
    if dataset:
        data += f" ({_samples(dataset)})"
    n_in, n_out = (config.get("net", {}).get("shape") or ["?", "?"])[:2]
    method = str(gradient.get("method", "vectorized"))
    how = METHODS.get(method, method)
    if method != "analytic":
        how += f", h={_g(gradient.get('h'))}"
    if str(gradient.get("dtype", "float64")) != "float64":
        how += f", in {gradient['dtype']}"
    reason = tags.get("numgrad.stop_reason", "?")
    if reason == "diverged":
        reason = (
            f"diverged at step {tags.get('numgrad.diverged.step')} "
            f"({tags.get('numgrad.diverged.quantity')} is {tags.get('numgrad.diverged.value')})"
        )
    taken = end["steps_taken"] if end else (last.step if last is not None else 0)
    text = (
        f"Gradient descent on {data} with a {n_in}×{n_out} SimpleNet (softmax(x·W), "
        f"cross-entropy): {how}; lr={_g(optimizer.get('lr'))}, {taken} of "
        f"{_g(optimizer.get('steps'))} steps, stopped: {reason}."
    )
    if end:
        text += f" Final loss {end['final_loss']:.6g}, accuracy {end['final_accuracy']:.4f}."
        if end.get("final_test_loss") is not None:
            text += (
                f" Held out: loss {end['final_test_loss']:.6g},"
                f" accuracy {end['final_test_accuracy']:.4f}."
            )
        return text
    if last is not None:
        return text + f" At step {last.step}: loss {last.loss:.6g}, accuracy {last.accuracy:.4f}."
    return text


def _g(value: Any) -> str:
    """A number in short form; ``?`` for a value the config did not give."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return "?" if value is None else str(value)


def _samples(dataset: Mapping[str, str]) -> str:
    import json

    shape = json.loads(dataset["profile"])["features_shape"]
    n = shape[0] if len(shape) > 1 else 1
    return f"{n} sample{'s' if n != 1 else ''}"
