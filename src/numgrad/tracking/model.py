"""The final SimpleNet as an MLflow 3 logged model: journaled by the run, made at send time.

A finished run journals one ``model`` record (:func:`model_record`, no mlflow import):
where its final weights are (``artifacts/weights/W_final.npy``, in the run's dtype),
an input example, the final metrics and the dataset to link, the numpy it ran with.
:func:`send_model`, called by the uploader (:mod:`numgrad.tracking.uploader`) (live at the end of
the run, or later by ``numgrad-sync``), turns the record into the model: a pyfunc
"model from code" (:mod:`numgrad.tracking.simplenet_pyfunc`, loadable with mlflow and
numpy only) with ``W`` as its artifact, a tensor signature ``(-1, n_inputs) ->
(-1, n_classes)`` in W's dtype, the input example, pinned requirements; the model is
the run's output (the runs table's Models column) and holds the run's final metrics.

Why at send time: saving a pyfunc model needs mlflow, which an offline run never
imports; so one path serves a live run and ``numgrad-sync`` alike, from the same files.

Sending twice makes one model: the model carries the tag ``numgrad.model_key`` =
``<run id>:<record seq>``, looked up before a model is created; a model left PENDING
or FAILED by an interrupted send is completed, a READY one only re-linked (the run's
output is added once, the metrics are exact duplicates the store ignores).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.tracking.ending import W_METRIC_PREFIX
from numgrad.tracking.provenance import base_tags
from numgrad.tracking.pyfunc_folder import save_pyfunc
from numgrad.tracking.weights import load_weights

MODEL_NAME = "simplenet"
KEY_TAG = "numgrad.model_key"


def model_record(
    weights: str,
    *,
    step: int,
    example: np.ndarray | None,
    metrics: Sequence[Sequence[Any]],
    dataset: Mapping[str, str] | None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The fields of a ``model`` journal record.

    ``weights`` is the ``.npy`` file of the final W relative to the journal's folder;
    ``step`` the steps taken (the model's step in the run); ``example`` a few rows of
    x; ``metrics`` ``[key, value, timestamp_ms, step]`` rows, as the run logged them
    (the final weights' own metrics are left to the run); ``tags`` by default the
    run's ``mlflow.*`` source tags.

    Examples
    --------
    >>> r = model_record("artifacts/weights/W_final.npy", step=3, example=np.ones((1, 2)),
    ...                  metrics=[["final_loss", 0.5, 1700000000000, 0]], dataset=None, tags={})
    >>> r["name"], r["example"], r["requirements"] == [f"numpy=={np.__version__}"]
    ('simplenet', [[1.0, 1.0]], True)
    """
    return {
        "name": MODEL_NAME,
        "weights": weights,
        "step": int(step),
        "example": None if example is None else np.asarray(example).tolist(),
        "example_dtype": None if example is None else str(np.asarray(example).dtype),
        "metrics": [list(m) for m in metrics if not m[0].startswith(W_METRIC_PREFIX)],
        "dataset": None if dataset is None else {k: dataset[k] for k in ("name", "digest")},
        # numpy as the run had it; the mlflow pin is added by whoever writes the model.
        "requirements": [f"numpy=={np.__version__}"],
        "tags": dict(tags)
        if tags is not None
        else {k: v for k, v in base_tags().items() if k.startswith("mlflow.")},
    }


def send_model(
    store: Any,
    run_id: str,
    entry: Mapping[str, Any],
    base_dir: Path,
    *,
    known: tuple[str, Collection[str]] | None = None,
) -> str:
    """Make (or complete) the logged model a ``model`` record describes; return its id.
    Its metrics (:func:`model_metrics`) are the caller's to log, with the run's own.

    ``known``: the run's experiment id and the model ids among its outputs, where the
    caller knows them without asking (a run it has just made, no model tried in it yet:
    no model has its key); else they are read from the store.
    """
    key = f"{run_id}:{entry['seq']}"
    W = load_weights(base_dir / entry["weights"])
    client, call = store.client, store.call  # the store's client, with its retries
    model = None
    if known is None:
        run = store.get_run(run_id)
        experiment_id = run.info.experiment_id
        outputs: Collection[str] = {o.model_id for o in run.outputs.model_outputs}
        found = call(client.search_logged_models, experiment_ids=[experiment_id],
                     filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1)  # fmt: skip
        model = found[0] if found else None
    else:
        experiment_id, outputs = known
    if model is None:
        n_inputs, n_classes = W.shape
        model = call(
            client.create_logged_model, experiment_id, source_run_id=run_id, name=entry["name"],
            model_type="SimpleNet", tags={**entry["tags"], KEY_TAG: key},
            params={"n_inputs": str(n_inputs), "n_classes": str(n_classes), "dtype": W.dtype.name},
        )  # fmt: skip
    if str(model.status).rsplit(".", 1)[-1] != "READY":  # new, or left PENDING by a crash
        try:
            with tempfile.TemporaryDirectory(prefix="numgrad-model-") as tmp:
                local = save_pyfunc(Path(tmp) / "model", W, entry, model, run_id)
                call(client.log_model_artifacts, model.model_id, str(local))
                call(client.finalize_logged_model, model.model_id, "READY")
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be the problem
                call(client.finalize_logged_model, model.model_id, "FAILED")
            raise
    if model.model_id not in outputs:
        from mlflow.entities import LoggedModelOutput  # the runs table's Models column

        call(client.log_outputs, run_id, [LoggedModelOutput(model.model_id, step=entry["step"])])
    return model.model_id


def model_metrics(entry: Mapping[str, Any], model_id: str) -> list[Any]:
    """The final metrics of a ``model`` record as the model's, on its dataset (MLflow
    ``Metric`` entities for ``log_batch``): with the run's own values and timestamps, so
    that the run keeps one copy of each, and the model shows them.

    Examples
    --------
    >>> entry = {"metrics": [["final_loss", 0.5, 1700000000000, 0]],
    ...          "dataset": {"name": "article", "digest": "e0b90cd2"}}
    >>> (m,) = model_metrics(entry, "m-1")
    >>> m.key, m.value, m.step, m.model_id, m.dataset_name
    ('final_loss', 0.5, 0, 'm-1', 'article')
    """
    from mlflow.entities import Metric

    dataset = entry["dataset"]
    on = dict(dataset_name=dataset["name"], dataset_digest=dataset["digest"]) if dataset else {}
    return [Metric(k, float(v), int(ms), int(s), model_id=model_id, **on)
            for k, v, ms, s in entry["metrics"]]  # fmt: skip
