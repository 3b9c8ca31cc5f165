"""What the runner hands a run's records to: :func:`open_sink` returns the sink.

``tracking.enabled=false`` gives a :class:`NullSink` (mlflow never imported); else an
:class:`MlflowSink`, one MLflow run: ``with sink:`` creates it (offline: only its
journal), :meth:`MlflowSink.log_step` takes each step; leaving the block writes the
final weights, figures and status: FINISHED, FAILED (any exception) or KILLED (signals).

Per step the sink only appends to lists. Every ``flush_seconds`` the new rows go to
``history.csv`` (thinned beyond ``history_max_rows``), the metrics of at most
``max_points`` evenly spaced steps to the journal and then to the store.

Examples
--------
>>> from numgrad.config import TrackingConfig
>>> sink = open_sink(TrackingConfig(enabled=False), config={}, overrides=[],
...                  output_dir=None, planned_steps=0)
>>> with sink:
...     sink.log_start(None)
>>> type(sink).__name__, sink.synced
('NullSink', True)
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad import signals
from numgrad.tracking import pages
from numgrad.tracking.dataset import CONTEXT, dataset_name, dataset_record, dataset_source
from numgrad.tracking.ending import NOTE_TAG, end_of, final_metrics, note, outcome
from numgrad.tracking.files import save_initial, write_inputs, write_outputs
from numgrad.tracking.history import History
from numgrad.tracking.journal import JournalError
from numgrad.tracking.model import model_record
from numgrad.tracking.null_sink import NullSink
from numgrad.tracking.provenance import SENDER_ENV, base_tags, parent_journal, run_tags
from numgrad.tracking.recorder import Recorder, set_aside_previous
from numgrad.tracking.records import (
    LONG_VALUE,
    MAX_KEY,
    STEP_METRICS,
    clip,
    describe_error,
    fit_tag,
    flatten_params,
    plain,
    run_name_from,
    sampled_steps,
)
from numgrad.tracking.uri import TrackingError, check_uri, resolve_uri

ARTIFACTS_DIR = "artifacts"  # in the run dir: what the run uploads, kept locally too
EXAMPLE_ROWS = 3  # rows of x kept as the logged model's input example


def open_sink(
    settings: Any,
    *,
    config: Mapping[str, Any],
    overrides: Sequence[str],
    output_dir: Path | str | None,
    planned_steps: int,
) -> NullSink | MlflowSink:
    """Check the tracking settings (a :class:`numgrad.config.TrackingConfig`) and return a sink.

    Raises :class:`TrackingError` with a one-line message, before any run exists, for
    an unsupported URI scheme, an unwritable SQLite path, a database that is not an
    MLflow store, or an unreachable tracking server (unless ``offline``).
    """
    if not settings.enabled:
        return NullSink()
    sweep_sender = os.environ.get(SENDER_ENV) if not settings.offline else None
    # A local sweep's job: its sender, which checked the store, sends it.
    uri = sweep_sender or check_uri(resolve_uri(settings.uri), probe=not settings.offline)
    if output_dir is None:
        raise TrackingError("a tracked run needs an output dir for its journal")
    return MlflowSink(
        settings, uri=uri, run_name=clip(settings.run_name or run_name_from(overrides), MAX_KEY),
        config=config, overrides=list(overrides), output_dir=Path(output_dir),
        planned_steps=int(planned_steps), handed_over=bool(sweep_sender),
    )  # fmt: skip


class MlflowSink:
    """One MLflow run around a descent; see :func:`open_sink`."""

    def __init__(
        self,
        settings: Any,
        *,
        uri: str,
        run_name: str,
        config: Mapping[str, Any],
        overrides: list[str],
        output_dir: Path,
        planned_steps: int,
        handed_over: bool = False,  # a local sweep's job: its journal is the sender's
    ) -> None:
        self.settings, self.uri, self.run_name = settings, uri, run_name
        self.config, self.overrides, self.output_dir = config, overrides, output_dir.absolute()
        self.artifacts = self.output_dir / ARTIFACTS_DIR
        self.selected = sampled_steps(planned_steps, settings.max_points, settings.log_every)
        self.recorder = Recorder(
            self.output_dir, uri=uri, experiment=settings.experiment, run_name=run_name,
            offline=settings.offline, grace=settings.outage_grace_seconds,
            handed_over=handed_over,
        )  # fmt: skip
        self.synced = False
        self._history: History | None = None
        self._metrics: list[list[Any]] = []  # [key, value, ms, step] not yet journaled
        self._last: Any = None
        self._last_extra: Mapping[str, float] | None = None
        self._last_queued = -1
        self._wall0: float | None = None  # wall time of the descent's start
        self._next_flush = math.inf
        self._W_init: np.ndarray | None = None
        self._end: dict[str, Any] | None = None
        self._stopped: dict[str, Any] | None = None  # where a signal stopped the descent
        self._dataset: dict[str, str] | None = None
        self._example: np.ndarray | None = None

    @property
    def run_id(self) -> str | None:
        return self.recorder.run_id

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MlflowSink:
        try:
            set_aside_previous(self.output_dir, [ARTIFACTS_DIR])
            (self.artifacts / "weights").mkdir(parents=True, exist_ok=True)
            write_inputs(self.artifacts, plain(self.config), self.overrides)
            self._history = History(self.artifacts / "history.csv", self.settings.history_max_rows)
            params = flatten_params(self.config)
            long = sorted(k for k, v in params.items() if v == LONG_VALUE)
            tags = {**base_tags(), **run_tags(self.config, self.overrides, self.output_dir)}
            if long:
                tags["numgrad.params_in_config_yaml"] = ",".join(long)
            self.recorder.start(
                tags=tags, params={k: v for k, v in params.items() if len(k) <= MAX_KEY},
                **parent_journal(self.output_dir),
            )  # fmt: skip
        except BaseException as exc:
            shutil.rmtree(self.artifacts, ignore_errors=True)  # nothing ran: leave nothing
            if isinstance(exc, OSError | JournalError):  # disk full, a read-only dir: no run yet
                raise TrackingError(f"cannot start the run: {JournalError.writing(exc)}") from None
            raise
        self._next_flush = time.monotonic() + self.settings.flush_seconds
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._finish(exc)
        return False

    def log_start(self, W_init: np.ndarray) -> None:
        """Save the initial weights (``weights/W_init.npy``)."""
        self._W_init = np.array(W_init, copy=True)
        save_initial(self.artifacts, self._W_init)

    def log_data(self, x: Any, t: Any, data_cfg: Any, seed: int, *, context: str = CONTEXT) -> None:
        """Record the data the run trains on (``x`` as used, integer labels ``t``), or with
        ``context="evaluation"`` its held-out part, as a dataset input named after ``data_cfg``."""
        name, source = dataset_name(data_cfg, seed), dataset_source(data_cfg)
        record = dataset_record(x, t, name=name, source=source)
        if context == CONTEXT:
            self._dataset = record
            self._example = np.array(x[:EXAMPLE_ROWS], copy=True)  # the logged model's example
        self.recorder.record("input", dataset=record, context=context)

    def log_step(self, record: Any, extra: Mapping[str, float] | None = None) -> None:
        """Take one :class:`~numgrad.descent.StepRecord`, with ``extra`` metrics at its weights
        (held-out loss, accuracy) at :attr:`selected` steps; flush every ``flush_seconds``."""
        self._last, self._last_extra = record, extra  # first: the end completes the rest
        self._history.add(record)
        if record.step in self.selected:
            self._queue(record, extra)
        if time.monotonic() >= self._next_flush:
            self.flush()

    def log_end(self, descent: Any, W_final: Any = None, evaluation: Any = None) -> None:
        """Remember a completed descent's outcome (:func:`~numgrad.tracking.ending.end_of`)
        and the ``evaluation`` of its final weights; written when the run ends."""
        self._end = end_of(descent, W_final, evaluation)
        self._last_extra = evaluation or self._last_extra  # the last step's, if queued at the end

    def log_stopped(self, descent: Any) -> None:
        """A descent a signal stopped: its weights as they are (after its ``steps_taken``
        updates) are kept as the run's ``weights/W_final``, with its figures."""
        self._stopped = end_of(descent)

    def flush(self) -> None:
        """New rows to ``history.csv``, new metrics to the journal, then to the store."""
        with signals.held():  # a signal lands between two writes, never inside one
            self._history.flush()
            if self._metrics:
                self.recorder.record("metrics", metrics=self._metrics)
                self._metrics = []
        self.recorder.flush(where=f"at step {self._last.step}" if self._last else "")
        self._next_flush = time.monotonic() + self.settings.flush_seconds

    def describe(self) -> str | None:
        """One line for the run summary: where to find the run."""
        if self.recorder.handed_over:
            journal = self.recorder.journal_path
            return f"mlflow: journaled in {journal}; the sweep's sender sends it to {self.uri}"
        if self.run_id is None:
            return None
        where = f"experiment '{self.settings.experiment}' on {self.uri}"
        page = pages.where(self.uri, pages.run_page(self.recorder.experiment_id, self.run_id))
        return f"mlflow: run {self.run_id} ({self.run_name}) in {where}; page: {page}"

    # ------------------------------------------------------------------ records

    def _queue(self, r: Any, extra: Mapping[str, float] | None = None) -> None:
        if self._wall0 is None:
            self._wall0 = time.time() - r.seconds
        step, ms = int(r.step), int((self._wall0 + r.seconds) * 1000)
        values = {key: getattr(r, key) for key in STEP_METRICS} | dict(extra or {})
        # MLflow stores inf as 1.8e308 and nan as 0: history.csv has them. None: not measured.
        # One extend: a signal never leaves half a step queued (queued again at the end).
        self._metrics.extend([[key, float(v), ms, step] for key, v in values.items()
                              if v is not None and math.isfinite(v)])  # fmt: skip
        self._last_queued = step

    # -------------------------------------------------------------------- finish

    def _finish(self, exc: BaseException | None) -> None:
        """Last rows, final metrics, weights, figures, status; never hides ``exc``.

        Written whole: another signal meanwhile (a sweep's worker gets a terminal's
        Ctrl-C from the terminal and from the sweep) waits until the end is journaled,
        then only cuts short a wait for a store that is down.
        """
        status, tags = outcome(exc, self._end)
        end = self._end if status == "FINISHED" else None
        why = ""  # why the store may lack records, when it is not that it is unreachable
        try:
            with signals.held(absorb=True) as late:
                self._write_end(status, tags, end, isinstance(exc, JournalError))
            self.synced = self.recorder.finish(status)
        except (KeyboardInterrupt, signals.Terminated, TrackingError, JournalError, OSError) as err:
            # Interrupted while waiting for the store, the store refused the run, or the
            # disk is full: the store's run must not stay RUNNING.
            if isinstance(err, OSError | JournalError):
                err = JournalError.writing(err, str(self.artifacts))
                raise self.recorder.cannot_write(err, "FAILED" if end else status) from None
            if not isinstance(err, TrackingError):
                why = "stopped before the tracking store had every record"
            if exc is None:
                print(f"numgrad: {self.recorder.local_note(why)}", file=sys.stderr)
                raise
            if not why:
                print(f"numgrad: {describe_error(err)}", file=sys.stderr)
        if isinstance(exc, JournalError):  # a write failed mid-run: one line, how to go on
            raise self.recorder.cannot_write(exc, status) from None
        if exc is not None and not self.synced:
            print(f"numgrad: {self.recorder.local_note(why)}", file=sys.stderr)
        if late and exc is None:  # a signal as the run finished: the run is whole, then it acts
            raise signals.exception_for(late[0])

    def _write_end(self, status: str, tags: dict[str, str], end: Any, disk_failed: bool) -> None:
        """The journal's last records (and the files they name), its end included; no
        figures once a write failed: the run fails on that line, a full disk adds none."""
        try:  # the description never fails a run
            tags[NOTE_TAG] = fit_tag(note(self.config, self._dataset, tags, end, self._last))
        except Exception as err:
            print(f"numgrad: no run description: {describe_error(err)}", file=sys.stderr)
        if self._last is not None and self._history.last is not self._last:
            self._history.add(self._last)  # a signal came between the two in log_step
        self._history.close()
        # The step of the rows queued last: a signal may have come before _last_queued was set.
        queued = max(self._last_queued, self._metrics[-1][3] if self._metrics else -1)
        if self._last is not None and queued != self._last.step:
            self._queue(self._last, self._last_extra)  # a run stopped early, or failed
        finals = final_metrics(end) if end else []
        self._metrics.extend(finals)
        if self._metrics:
            self.recorder.record("metrics", metrics=self._metrics)
            self._metrics = []
        not_drawn = write_outputs(self.artifacts, end or self._stopped, self._history, self._W_init,
                                  figures=self.settings.figures and not disk_failed)  # fmt: skip
        self.recorder.record("artifact", local=ARTIFACTS_DIR, path=None)
        self.recorder.record("tags", tags=tags)
        if finals and self.settings.log_model:
            self.recorder.record("model", **model_record(
                ARTIFACTS_DIR + "/weights/W_final.npy", step=self._end["steps_taken"],
                example=self._example, metrics=finals, dataset=self._dataset,
            ))  # fmt: skip
        self.recorder.end(status)
        if not_drawn:  # said once the end is journaled: a disk that filled up says it there
            print(f"numgrad: {not_drawn}", file=sys.stderr)
