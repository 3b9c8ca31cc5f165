"""A journal's pending records as batches: which records go to the store together, and
how far the store holds the journal once a batch is in.

The :class:`~numgrad.tracking.uploader.Uploader` sends a batch, then acknowledges it.
Every record kind joins the batch it comes in (a finished short run is one batch):
its params, tags and metrics go to the store in as few ``log_batch`` calls as MLflow's
limits allow, with the model's metrics (the run's own final ones, naming the model),
before the batch's ``end`` record (a run ends with everything in it); files, dataset
inputs and models go as they come. A param that a later record changes is not merged
away: what came before goes first, and the store refuses the change as it would apart.
Sending a batch again is harmless (see the uploader), so a batch cut short is sent
again whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numgrad.tracking.mlflow_store import Metric, MlflowStore
from numgrad.tracking.model import model_metrics, send_model
from numgrad.tracking.records import MAX_METRICS_PER_BATCH

Batch = list[tuple[str, Any]]


@dataclass
class Sent:
    """What an uploader has sent so far."""

    metrics: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    inputs: int = 0
    models: int = 0
    status: str | None = None

    @property
    def values(self) -> int:
        return self.metrics + self.params + self.tags


def batches(
    pending: list[dict[str, Any]], acked: int, rows: int
) -> Iterator[tuple[Batch, tuple[int, int]]]:
    """Groups of ``pending`` records to send together, each with how far the store then
    holds the journal: ``(seq of the last whole record, metric rows of the next one)``.

    ``acked`` and ``rows`` say how far it holds it now: the metric rows of record
    ``acked + 1`` already stored are left out. A batch holds at most
    ``MAX_METRICS_PER_BATCH`` metric values, so that a long run's journal is
    acknowledged as it goes.

    Examples
    --------
    >>> pending = [{"seq": 2, "kind": "params", "params": {"lr": "0.1"}},
    ...            {"seq": 3, "kind": "metrics", "metrics": [["loss", 1.0, 5, 0]] * 3},
    ...            {"seq": 4, "kind": "end", "status": "FINISHED"}]
    >>> [([kind for kind, _ in batch], upto) for batch, upto in batches(pending, 1, 0)]
    [(['params', 'metrics', 'end'], (4, 0))]
    >>> [len(rows) for kind, rows in next(batches(pending[1:], 2, 1))[0] if kind == "metrics"]
    [2]
    """
    batch: Batch = []
    count = 0
    for entry in pending:
        kind, seq = entry["kind"], entry["seq"]
        if kind != "metrics":
            batch.append((kind, entry))
            continue
        metric_rows = entry["metrics"]
        i = rows if seq == acked + 1 else 0
        while i < len(metric_rows):
            chunk = metric_rows[i : i + MAX_METRICS_PER_BATCH - count]
            batch.append(("metrics", chunk))
            count, i = count + len(chunk), i + len(chunk)
            if count >= MAX_METRICS_PER_BATCH:
                yield batch, ((seq, 0) if i == len(metric_rows) else (seq - 1, i))
                batch, count = [], 0
    if batch:
        yield batch, (pending[-1]["seq"], 0)


@dataclass
class Run:
    """The run a batch goes to: its id, its experiment, and whether this uploader made
    it just now (no model can be in it yet: its key names the run)."""

    store: MlflowStore
    run_id: str
    experiment_id: str | None
    base_dir: Path
    new: bool = False
    sent: Sent = field(default_factory=Sent)


def send(run: Run, batch: Batch) -> None:
    """Send one batch (see the module's docstring); raise on failure."""
    store, run_id, sent = run.store, run.run_id, run.sent
    metrics: list[Metric] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    of_model: list[Any] = []  # a model's metrics: the run's own final ones, naming the model

    def values() -> None:  # what was gathered, before a record that needs it stored
        if metrics or params or tags or of_model:
            # One copy each: the run's row of a final metric comes with the model's.
            named = {(m.key, m.value, m.timestamp, m.step) for m in of_model}
            own = [m for m in metrics if m not in named]
            store.log(run_id, metrics=own, params=params, tags=tags, entities=of_model)
            sent.metrics, sent.params = sent.metrics + len(metrics), sent.params + len(params)
            sent.tags += len(tags)
            metrics.clear(), params.clear(), tags.clear(), of_model.clear()

    for kind, item in batch:
        if kind == "metrics":
            metrics.extend((k, float(v), int(ms), int(step)) for k, v, ms, step in item)
        elif kind == "params":
            if any(params.get(k, v) != v for k, v in item["params"].items()):
                values()  # a param changed: sent apart, so that the store refuses it
            params.update(item["params"])
        elif kind == "tags":
            tags.update(item["tags"])
        elif kind == "artifact":
            store.log_artifact(run_id, run.base_dir / item["local"], item.get("path"))
            sent.artifacts += 1
        elif kind == "input":
            store.log_dataset(run_id, item["dataset"], item["context"])
            sent.inputs += 1
        elif kind == "model":
            known = (run.experiment_id, ()) if run.new else None  # a new run: nothing to look up
            run.new = False  # tried once: a second try looks for what the first left
            model_id = send_model(store, run_id, item, run.base_dir, known=known)
            of_model.extend(model_metrics(item, model_id))  # logged with the run's values
            sent.models += 1
        elif kind == "end":
            values()
            store.terminate(run_id, item["status"], item.get("end_time"))
            sent.status = item["status"]
        # "start" is the run's creation (the uploader's); "run" and "ack" are bookkeeping.
    values()
