"""Journal records into an MLflow run: the one path from the journal to the store.

A live run sends each flush's new records through :func:`send`, and ``numgrad-sync``
sends what a store has not acknowledged through the same function. Sending twice is
harmless: the SQL store ignores a metric value it already holds (same key, step,
timestamp and value), params are rewritten with the same value, tags and artifacts
are overwritten, a dataset input the run has is not added again, a logged model is
found by its key before one is made (:mod:`numgrad.tracking.model`), and the end
status is set again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numgrad.tracking.journal import JournalError
from numgrad.tracking.mlflow_store import Metric, MlflowStore
from numgrad.tracking.model import send_model

PARENT_TAG = "mlflow.parentRunId"


@dataclass
class Sent:
    """What :func:`send` uploaded."""

    metrics: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    inputs: int = 0
    models: int = 0
    status: str | None = None

    def add(self, other: Sent) -> None:
        self.metrics += other.metrics
        self.params += other.params
        self.tags += other.tags
        self.artifacts += other.artifacts
        self.inputs += other.inputs
        self.models += other.models
        self.status = other.status or self.status


def open_run(
    store: MlflowStore,
    start: Mapping[str, Any],
    *,
    parent_run_id: str | None = None,
    experiment_id: str | None = None,
) -> str:
    """Create the run a journal's ``start`` record describes; return its id.

    The run keeps the journal's start time, name and tags (with ``parent_run_id`` as
    its parent, when given), in ``experiment_id`` or else the journal's experiment,
    created if the store lacks it.
    """
    experiment_id = experiment_id or store.experiment_id(start["experiment"])
    tags = dict(start.get("tags") or {})
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    return store.create_run(
        experiment_id, run_name=start["run_name"], tags=tags, start_time=start["start_time"]
    )


def send(
    store: MlflowStore, run_id: str, entries: Sequence[Mapping[str, Any]], base_dir: Path
) -> Sent:
    """Upload journal records, in order, to the run ``run_id``.

    Consecutive metrics, params and tags go in shared batches; ``artifact`` paths are
    relative to ``base_dir`` (the journal's folder); ``input`` is a dataset input
    (:mod:`numgrad.tracking.dataset`), ``model`` the final SimpleNet as a logged model
    (:mod:`numgrad.tracking.model`); ``end`` sets the final status.
    """
    sent = Sent()
    metrics: list[Metric] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {}

    def flush() -> None:
        if metrics or params or tags:
            store.log(run_id, metrics=metrics, params=params, tags=tags)
            sent.metrics, sent.params, sent.tags = (
                sent.metrics + len(metrics), sent.params + len(params), sent.tags + len(tags),
            )  # fmt: skip
            metrics.clear(), params.clear(), tags.clear()

    for entry in entries:
        kind = entry["kind"]
        if kind == "metrics":
            metrics.extend((k, float(v), int(ms), int(step)) for k, v, ms, step in entry["metrics"])
        elif kind == "params":
            params.update(entry["params"])
        elif kind == "tags":
            tags.update(entry["tags"])
        elif kind == "artifact":
            flush()
            local = base_dir / entry["local"]
            if not local.exists():
                raise JournalError(f"the artifact {local} recorded in the journal is missing")
            store.log_artifact(run_id, local, entry.get("path"))
            sent.artifacts += 1
        elif kind == "input":
            flush()
            store.log_dataset(run_id, entry["dataset"], entry["context"])
            sent.inputs += 1
        elif kind == "model":
            flush()
            send_model(store, run_id, entry, base_dir)
            sent.models += 1
        elif kind == "end":
            flush()
            store.terminate(run_id, entry["status"], entry.get("end_time"))
            sent.status = entry["status"]
        # "start" is the run's creation (open_run); nothing more to send for it.
    flush()
    return sent
