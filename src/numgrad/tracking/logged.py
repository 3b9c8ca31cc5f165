"""A logged run read back from its store: its final weights, its config.

A warm start (``net.init=run``) reads the run's ``weights/W_final.npy``;
``numgrad-rerun`` reads its ``config.yaml`` and ``overrides.yaml`` too. Reading never
creates anything: a SQLite store that does not exist is "no such run", not a new empty
store, and the files go to a temporary folder removed afterwards.

Every failure is a :class:`LoggedRunError` with a one-line message; the caller names
the setting it came from (``net.from_run``, numgrad-rerun's run id).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.tracking.dataset import CONTEXT
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.records import short_message
from numgrad.tracking.uri import (
    PROBE_TIMEOUT,
    TrackingError,
    check_uri,
    is_http,
    server_alive,
    sqlite_path,
)
from numgrad.tracking.weights import HEADER_BYTES, MAX_ELEMENTS, WeightsError, load_weights

W_FINAL = "weights/W_final.npy"


class LoggedRunError(TrackingError):
    """A logged run that cannot be read (missing, incomplete, unreachable); one line."""


def open_store(uri: str) -> MlflowStore:
    """An existing store, opened for reading: never created, never an empty new SQLite file."""
    db = sqlite_path(uri)
    if db is not None and (not db.is_file() or db.stat().st_size == 0):
        raise LoggedRunError(f"no MLflow store at {db} (tracking URI {uri})")
    try:
        uri = check_uri(uri, probe=db is not None)  # a SQLite file: is it an MLflow store?
        if is_http(uri) and not server_alive(uri, PROBE_TIMEOUT):
            raise LoggedRunError(f"tracking server {uri} is not reachable")
        return MlflowStore(uri).open()
    except LoggedRunError:
        raise
    except TrackingError as exc:
        raise LoggedRunError(str(exc)) from None


class LoggedRun:
    """One run of an opened store; :meth:`download` fetches its files into ``folder``."""

    def __init__(self, store: MlflowStore, run: Any, folder: Path) -> None:
        self.store, self.run, self.folder = store, run, folder
        self.run_id: str = run.info.run_id
        self.status: str = run.info.status

    def has(self, path: str) -> bool:
        """Does the run have the artifact file ``path`` (e.g. ``weights/W_final.npy``)?"""
        return self.store.artifact_size(self.run_id, path) is not None

    def download(self, path: str) -> Path:
        """The artifact ``path`` as a local file; LoggedRunError when the run lacks it."""
        if not self._call(self.has, path):
            raise LoggedRunError(f"run {self.run_id} has no {path}{self._why_missing(path)}")
        return self._call(self.store.download, self.run_id, path, self.folder)

    def weights(self, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
        """``weights/W_final.npy``: a float32 or float64 matrix, as the run saved it.

        Untrusted: a file larger than a matrix of ``max_elements`` is refused before it
        is downloaded, and its header is checked before anything is allocated.
        """
        size = self._call(self.store.artifact_size, self.run_id, W_FINAL)
        if size is not None and size > HEADER_BYTES + 8 * max_elements:
            raise LoggedRunError(f"{W_FINAL} of run {self.run_id} holds {size:,} bytes: more "
                                 f"than a W of {max_elements:,} elements")  # fmt: skip
        path = self.download(W_FINAL)
        try:
            return load_weights(path, max_elements=max_elements)
        except (WeightsError, OSError) as exc:
            raise LoggedRunError(f"{W_FINAL} of run {self.run_id} {exc}") from None

    def training_digest(self) -> str | None:
        """The digest of the run's training dataset input (context ``training``); None if none."""
        for item in self.run.inputs.dataset_inputs:
            if any(t.key == "mlflow.data.context" and t.value == CONTEXT for t in item.tags):
                return item.dataset.digest
        return None

    def _why_missing(self, path: str) -> str:
        if self.run.data.tags.get("numgrad.kind") == "sweep":
            return ": it is a sweep's parent run; use one of its children"
        if path != W_FINAL:
            return " (not a numgrad run, or its files were deleted)"
        if self.status in ("FAILED", "KILLED"):
            return f": it ended {self.status} before its end"
        if self.status in ("RUNNING", "SCHEDULED"):
            return f": it is {self.status}, not finished"
        return " (not a numgrad run, or its files were deleted)"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            raise LoggedRunError(
                f"cannot read run {self.run_id} from {self.store.uri}: {short_message(exc)}"
            ) from None


@contextlib.contextmanager
def logged_run(uri: str, run_id: str) -> Iterator[LoggedRun]:
    """The run ``run_id`` of the store at ``uri``; its downloads are removed on leaving."""
    store = open_store(uri)
    try:
        run = store.get_run(run_id)
    except Exception as exc:
        raise LoggedRunError(f"cannot read run {run_id} from {uri}: {short_message(exc)}") from None
    if run is None:
        raise LoggedRunError(f"no run {run_id} in {store.uri}")
    if run.info.lifecycle_stage != "active":  # deleted: its files may be gone any moment
        raise LoggedRunError(f"run {run_id} is deleted in {store.uri}; restore it first "
                             f"(mlflow runs restore --run-id {run_id})")  # fmt: skip
    # MLflow draws a progress bar per download on stderr: not for one small file.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="numgrad-logged-") as folder:
        yield LoggedRun(store, run, Path(folder))


def read_weights(uri: str, run_id: str, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """``W_final`` of a logged run, as saved (float32 or float64).

    Raises :class:`LoggedRunError`: no such store or run, a run without the file (it
    failed or was killed before its end), a file that is not a float matrix of at most
    ``max_elements`` elements.
    """
    with logged_run(uri, run_id) as run:
        return run.weights(max_elements)


def training_digest(uri: str, run_id: str) -> str | None:
    """The digest of a logged run's training dataset; None for a run logged without one."""
    with logged_run(uri, run_id) as run:
        return run.training_digest()
