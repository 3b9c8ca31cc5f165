"""The parent MLflow run of a sweep: made before the first job, ended with the summary.

Its journal and its files live in the sweep dir; its id (and, for an offline sweep,
its journal) reach every job through the environment, so that each job's run becomes
its child (``mlflow.parentRunId``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from numgrad.sweep.summary import SUMMARY_FILE, TABLE_FILE, SweepOutcome, description
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.provenance import PARENT_JOURNAL_ENV, PARENT_RUN_ENV, base_tags, orphaned
from numgrad.tracking.recorder import Recorder, set_aside_previous
from numgrad.tracking.records import describe_error, fit_tag
from numgrad.tracking.uri import check_uri, resolve_uri

FIGURES_DIR = "sweep_figures"  # in the sweep dir; "figures/" in the parent run
EXTRA_FILES = ("multirun.yaml", "optimization_results.yaml")  # written by Hydra's sweepers
GRACE_SECONDS = 10.0  # after Ctrl-C, how long live children get to end their runs


class SweepParent:
    """One sweep's parent run; ``settings`` is the sweep's ``TrackingConfig``."""

    def __init__(self, settings: Any, sweep_dir: Path, name: str) -> None:
        self.settings, self.sweep_dir, self.name = settings, sweep_dir, name
        self.recorder: Recorder | None = None
        self.children_elsewhere = False  # jobs choose their own experiment

    @property
    def run_id(self) -> str | None:
        return None if self.recorder is None else self.recorder.run_id

    @property
    def uri(self) -> str | None:
        return None if self.recorder is None else self.recorder.uri

    def open(self, tags: Mapping[str, str]) -> None:
        """Check the store, create (and migrate) it if new, and start the parent run."""
        settings = self.settings
        uri = check_uri(resolve_uri(settings.uri), probe=not settings.offline)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        set_aside_previous(self.sweep_dir)
        self.recorder = Recorder(
            self.sweep_dir, uri=uri, experiment=settings.experiment, run_name=self.name,
            offline=settings.offline, grace=settings.outage_grace_seconds,
        )  # fmt: skip
        self.recorder.start(kind="sweep", tags={**base_tags(), **tags})

    def job_env(self) -> dict[str, str]:
        """What a job needs to know to become a child of this run."""
        env = {PARENT_JOURNAL_ENV: str(self.recorder.journal_path)}
        if self.run_id is not None:
            env[PARENT_RUN_ENV] = self.run_id
        return env

    # ---------------------------------------------------------------- children

    def children(self, *, wait: bool) -> list[Any]:
        """The parent's child runs; after Ctrl-C, give live ones time to end first."""
        store = self._store()
        if store is None:
            return []
        deadline = time.monotonic() + (GRACE_SECONDS if wait else 0.0)
        while True:
            runs = self._search_children(store)
            live = [r for r in runs if r.info.status == "RUNNING" and not orphaned(r)]
            if not live or time.monotonic() >= deadline:
                return runs
            time.sleep(0.5)

    def running_by_pid(self) -> dict[int, str]:
        """``{pid: run_id}`` of this sweep's RUNNING children (empty without a store)."""
        store = self._store()
        try:
            runs = self._search_children(store) if store is not None else []
        except Exception:  # stopping workers must not depend on the store
            return {}
        return {
            int(r.data.tags["numgrad.pid"]): r.info.run_id
            for r in runs
            if r.info.status == "RUNNING" and r.data.tags.get("numgrad.pid", "").isdigit()
        }

    def close_lost_children(self, children: list[Any], notes: list[str]) -> None:
        """No child stays RUNNING once its process is gone (a killed worker, Ctrl-C)."""
        store = self._store()
        for run in children:
            if run.info.status != "RUNNING":
                continue
            if not orphaned(run):
                notes.append(
                    f"run {run.info.run_id} ({run.info.run_name}) is still RUNNING on "
                    f"{run.data.tags.get('numgrad.host', '?')}"
                )
                continue
            with contextlib.suppress(Exception):
                store.log(run.info.run_id, tags={"numgrad.stop_reason": "orphaned"})
                store.terminate(run.info.run_id, "KILLED")
                run.info._status = "KILLED"  # our copy, for the summary: no second query

    def _store(self) -> MlflowStore | None:
        """The store, unless there is none (offline) or it is known to be down."""
        if self.recorder is None or self.recorder.store_down:
            return None
        return self.recorder.store

    def _search_children(self, store: MlflowStore) -> list[Any]:
        experiments = [self.recorder.experiment_id]
        if self.children_elsewhere:
            found = store.call(store.client.search_experiments, max_results=1000)
            experiments = [e.experiment_id for e in found] or experiments
        return store.search_runs(experiments, f"tags.mlflow.parentRunId = '{self.run_id}'")

    # --------------------------------------------------------------------- end

    def finish(self, outcome: SweepOutcome, exc: BaseException | None) -> bool:
        """Record the summary, figures and counts; end the run. True when the store has it."""
        recorder = self.recorder
        failed = outcome.failed
        tags = {
            "numgrad.sweep.jobs": str(len(outcome.rows)),
            "numgrad.sweep.finished_count": str(len(outcome.rows) - len(failed)),
            "numgrad.sweep.failed_count": str(len(failed)),
            "mlflow.note.content": fit_tag(description(outcome, self.sweep_dir)),
        }
        if outcome.summary is not None and (self.sweep_dir / TABLE_FILE).is_file():
            # What makes the artifact view open the JSON as a table (MlflowClient.log_table
            # sets it too).
            tags["mlflow.loggedArtifacts"] = json.dumps([{"path": TABLE_FILE, "type": "table"}])
        if failed:
            tags["numgrad.sweep.failed"] = fit_tag(
                "; ".join(r["overrides"] or "(none)" for r in failed)
            )
        if exc is not None:
            tags["numgrad.error"] = fit_tag(describe_error(exc))
        now = int(time.time() * 1000)
        metrics = [["sweep_jobs", float(len(outcome.rows)), now, 0],
                   ["sweep_failed", float(len(failed)), now, 0]]  # fmt: skip
        best = outcome.best()
        if best is not None:
            metrics.append(["best_final_loss", float(best["final_loss"]), now, 0])
        recorder.record("tags", tags=tags)
        recorder.record("metrics", metrics=metrics)
        if outcome.summary is not None:
            recorder.record("artifact", local=SUMMARY_FILE, path=None)
        if outcome.summary is not None and (self.sweep_dir / TABLE_FILE).is_file():
            recorder.record("artifact", local=TABLE_FILE, path=None)
        for extra in EXTRA_FILES:
            if (self.sweep_dir / extra).is_file():
                recorder.record("artifact", local=extra, path=None)
        figures = self.sweep_dir / FIGURES_DIR
        if figures.is_dir() and any(figures.iterdir()):
            recorder.record("artifact", local=FIGURES_DIR, path="figures")
        try:
            return recorder.finish(outcome.status)
        except Exception as err:
            print(f"numgrad: could not end the sweep's parent run {self.run_id} on "
                  f"{self.uri}: {describe_error(err)}", file=sys.stderr)  # fmt: skip
            return False
