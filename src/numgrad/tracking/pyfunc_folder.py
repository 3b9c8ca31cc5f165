"""The folder of a SimpleNet pyfunc model, as :mod:`numgrad.tracking.model` logs it.

The first model of its kind in a process (W's dtype and shape, the input example, the
requirements) is saved by MLflow (``mlflow.pyfunc.save_model``, a "model from code":
:mod:`numgrad.tracking.simplenet_pyfunc`); later ones are copies of it with their own W
and ids in ``MLmodel``, what MLflow would write in a tenth of the time (a sweep's
sender and ``numgrad-sync`` make one per run).
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CODE = Path(__file__).with_name("simplenet_pyfunc.py")


def save_pyfunc(
    path: Path, W: np.ndarray, entry: Mapping[str, Any], model: Any, run_id: str
) -> Path:
    """Write the pyfunc model of ``W`` into the folder ``path`` (which must not exist):
    saved by MLflow when it is the first of its kind in this process, else copied from
    that first one (the module's docstring says why)."""
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
        setattr(environment, _REQUIREMENT_CHECK, lambda model_requirements: None)
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
