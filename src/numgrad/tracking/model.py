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

import atexit
import contextlib
import copy
import datetime
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.tracking.ending import W_METRIC_PREFIX
from numgrad.tracking.provenance import base_tags
from numgrad.tracking.weights import load_weights

MODEL_NAME = "simplenet"
KEY_TAG = "numgrad.model_key"
CODE = Path(__file__).with_name("simplenet_pyfunc.py")


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


def save_pyfunc(
    path: Path, W: np.ndarray, entry: Mapping[str, Any], model: Any, run_id: str
) -> Path:
    """Write the pyfunc model of ``W`` into the folder ``path`` (which must not exist).

    The first model of its kind in a process (W's dtype and shape, the input example,
    the requirements) is saved by MLflow; later ones are copies of it with their own
    W and ids in ``MLmodel``: what MLflow would write, in a tenth of the time (a
    sweep's sender and ``numgrad-sync`` make one per run)."""
    import mlflow
    from mlflow.models import Model

    key = (W.dtype.str, W.shape, entry.get("example_dtype"), repr(entry.get("example")),
           tuple(entry["requirements"]), mlflow.__version__)  # fmt: skip
    if key not in _TEMPLATES:
        _save_with_mlflow(path, W, entry, model, run_id)
        _TEMPLATES[key] = _keep(path), Model.load(path / "MLmodel").to_dict()
        return path
    template, fields = _TEMPLATES[key]
    # Linked, not copied: MLflow copies them into the store next, and a copy here would
    # cost as much again. The two files written below are left out, so a link is never
    # written through.
    shutil.copytree(template, path, ignore=shutil.ignore_patterns("W.npy", "MLmodel"),
                    copy_function=_link)  # fmt: skip
    # Written once, in place. (MLflow copies it from a source file, which "uri" names:
    # a temporary path in every case, gone once the model is logged.)
    weights = path / "artifacts" / "W.npy"
    np.save(weights, W)
    mlmodel = Model.from_dict(copy.deepcopy(fields))
    mlmodel.flavors["python_function"]["artifacts"]["W"]["uri"] = str(weights)
    mlmodel.artifact_path, mlmodel.run_id = model.artifact_location, run_id
    mlmodel.model_uuid = mlmodel.model_id = model.model_id
    mlmodel.utc_time_created = str(datetime.datetime.now(datetime.UTC).replace(tzinfo=None))
    mlmodel.save(path / "MLmodel")
    return path


# A saved model per kind, and its MLmodel's fields, for this process's later ones.
_TEMPLATES: dict[tuple, tuple[Path, dict[str, Any]]] = {}


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def _keep(path: Path) -> Path:
    """A copy of a saved model, removed when the process exits."""
    kept = Path(tempfile.mkdtemp(prefix="numgrad-model-template-"))
    atexit.register(shutil.rmtree, kept, ignore_errors=True)
    shutil.copytree(path, kept / "model")
    return kept / "model"


def _save_with_mlflow(
    path: Path, W: np.ndarray, entry: Mapping[str, Any], model: Any, run_id: str
) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    n_inputs, n_classes = W.shape
    # Unnamed tensors: predict() takes and returns plain arrays (a named input would reach
    # it as a dict); REST clients send {"inputs": [[...], ...]}.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(W.dtype, (-1, n_inputs))]),
        outputs=Schema([TensorSpec(W.dtype, (-1, n_classes))]),
    )
    example = None
    if entry.get("example") is not None:
        example = np.asarray(entry["example"], dtype=entry["example_dtype"]).astype(W.dtype)
    weights = path.parent / "W.npy"
    np.save(weights, W)
    # What Model.log would pass: the model's id and run, so that MLmodel names them.
    mlmodel = Model(
        artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
        model_id=model.model_id,
    )  # fmt: skip
    requirements = [f"mlflow=={mlflow.__version__}", *entry["requirements"]]
    with _quiet_mlflow(), _no_requirement_scan(requirements):
        mlflow.pyfunc.save_model(
            path, python_model=str(CODE), artifacts={"W": str(weights)}, signature=signature,
            input_example=example, mlflow_model=mlmodel,
            pip_requirements=requirements,
        )  # fmt: skip


# MLflow's check of a saved model's requirements against what is installed, by the
# private name through which pyfunc.save_model calls it (MLflow 3.17).
_REQUIREMENT_CHECK = "warn_dependency_requirement_mismatches"


@contextlib.contextmanager
def _no_requirement_scan(requirements: Sequence[str]) -> Iterator[None]:
    """Skip MLflow's check of ``requirements`` against the installed packages when they
    pin exactly this process's mlflow and numpy: it cannot warn then, and it lists the
    files of every installed distribution to map modules to packages, 0.3 s of the
    first model in every process (a single run's, each sender's and numgrad-sync's).

    MLflow has no public switch for it. Its one private name is swapped only while the
    model is saved, and only when present: test_model fails, naming MLflow's version,
    when it moves. Requirements from another process's numpy (a journal synced from
    elsewhere) are checked as before, so MLflow still says that they differ."""
    import mlflow
    import mlflow.utils.environment as environment

    pinned_here = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]
    original = getattr(environment, _REQUIREMENT_CHECK, None)
    if original is None or list(requirements) != pinned_here:
        yield
        return
    with _SWAP_LOCK:
        setattr(environment, _REQUIREMENT_CHECK, lambda requirements: None)
        try:
            yield
        finally:
            setattr(environment, _REQUIREMENT_CHECK, original)


_SWAP_LOCK = threading.Lock()  # a module's attribute is swapped and restored by one at a time


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """No "Validating input example" line nor "Downloading artifacts" bar on the run's terminal."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    logger.setLevel(logging.WARNING)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar
