"""The parent MLflow run of a sweep, and the sender process that uploads the sweep.

The parent's journal lives in the sweep dir, like each job's in its own dir. A sweep
with a store starts one sender (:mod:`numgrad.tracking.sender`) beside it, watched and
restarted should it die (:mod:`numgrad.sweep.watched_sender`): jobs only journal, the
sender makes the parent run, every job's run as its child, and sends their records as
they are written. Jobs that run elsewhere (Ray) cannot be followed:
they get the parent's id and send their records themselves.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from numgrad.processes import alive
from numgrad.sweep.summary import SUMMARY_FILE, TABLE_FILE, SweepOutcome, description
from numgrad.sweep.watched_sender import WatchedSender
from numgrad.tracking.journal import JOURNAL_FILE, JournalError, JournalReader
from numgrad.tracking.provenance import PARENT_JOURNAL_ENV, PARENT_RUN_ENV, SENDER_ENV, base_tags
from numgrad.tracking.recorder import Recorder, set_aside_previous
from numgrad.tracking.records import describe_error, fit_tag
from numgrad.tracking.uri import (
    TrackingError,
    check_uri,
    resolve_uri,
    sqlite_path,
    sqlite_tables,
)

FIGURES_DIR = "sweep_figures"  # in the sweep dir; "figures/" in the parent run
EXTRA_FILES = ("multirun.yaml", "optimization_results.yaml")  # written by Hydra's sweepers
GRACE_SECONDS = 10.0  # after Ctrl-C, how long live jobs get to end their runs
START_SECONDS = 120.0  # how long a sweep with remote jobs waits for its parent run


def _new_sqlite_store(uri: str) -> bool:
    """True for a SQLite store whose tables do not exist yet (read-only: nothing made)."""
    db = sqlite_path(uri)
    if db is None:
        return False
    if not db.is_file() or db.stat().st_size == 0:
        return True
    try:
        return "alembic_version" not in sqlite_tables(db)
    except sqlite3.Error:
        return True


class SweepParent:
    """One sweep's parent run; ``settings`` is the sweep's ``TrackingConfig``."""

    def __init__(self, settings: Any, sweep_dir: Path, name: str) -> None:
        self.settings, self.sweep_dir, self.name = settings, sweep_dir, name
        self.recorder: Recorder | None = None
        self.sender: WatchedSender | None = None
        self.run_id: str | None = None
        self.state: dict[str, Any] = {}  # the sender's last word
        self._here: Any = None  # the sender's work done in this process, when none answers

    @property
    def uri(self) -> str | None:
        return None if self.recorder is None else self.recorder.uri

    def open(self, tags: Mapping[str, str], *, remote_jobs: bool) -> None:
        """Check the store, journal the parent's start, start the sender.

        With ``remote_jobs``, wait for the parent run to exist (its id goes to the jobs);
        also for a new SQLite store, so that it is made once, before any job runs, and
        nobody who opens it meanwhile finds it half made.
        """
        settings = self.settings
        uri = check_uri(resolve_uri(settings.uri), probe=not settings.offline)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        set_aside_previous(self.sweep_dir)
        self.recorder = Recorder(
            self.sweep_dir, uri=uri, experiment=settings.experiment, run_name=self.name,
            offline=settings.offline, handed_over=not settings.offline,
        )  # fmt: skip
        self.recorder.start(kind="sweep", tags={**base_tags(), **tags})
        if settings.offline:
            return
        self.sender = WatchedSender(self.sweep_dir, uri, settings.outage_grace_seconds,
                                    uploaders=settings.uploaders)  # fmt: skip
        self.sender.start()
        if remote_jobs or _new_sqlite_store(uri):
            said = self.sender.hear("parent", START_SECONDS)
            if said.get("event") != "parent":
                why = said.get("error") or "no answer from its sender"
                raise TrackingError(f"cannot create the sweep's parent run on {uri}: {why}")
            self.run_id = said["run_id"]

    def job_env(self, *, remote: bool) -> dict[str, str]:
        """What a job needs to know to become a child of this run."""
        env = {PARENT_JOURNAL_ENV: str(self.recorder.journal_path)}
        if self.sender is not None and not remote:
            env[SENDER_ENV] = self.recorder.uri  # jobs here only journal; the sender sends
        if remote:
            env[SENDER_ENV] = ""  # jobs elsewhere send their own records
        if self.run_id is not None:
            env[PARENT_RUN_ENV] = self.run_id
        return env

    # ---------------------------------------------------------------- children

    def running_by_pid(self) -> dict[int, str]:
        """``{pid: journal}`` of this sweep's jobs still in a run (journals without an end)."""
        found = {}
        for path in self.sweep_dir.glob(f"*/{JOURNAL_FILE}"):
            with contextlib.suppress(JournalError, KeyError, ValueError):
                reader = JournalReader(path).read_new()
                if reader.entries and reader.end is None:
                    found[int(reader.start["tags"]["numgrad.pid"])] = str(path)
        return found

    def wait_for_running(self, pids: set[int]) -> None:
        """After Ctrl-C, give jobs of other processes time to end their runs (a killed
        process never will: its run the sender ends)."""
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(map(alive, set(self.running_by_pid()) & pids)):
            time.sleep(0.25)

    def drain(self) -> dict[str, Any]:
        """Ask the sender to send every job's journal; its state of the sweep (or {})."""
        return self._ask("drain")

    def _ask(self, command: str) -> dict[str, Any]:
        if self.sender is None:
            return {}
        said = self.sender.ask(command, self.settings.outage_grace_seconds + 120)
        if not said:  # no sender answers (they kept dying): its work done here instead
            said = self._send_here(command)
        if said.get("event") == "state":
            self.state = said
            self.run_id = said["parent"]["run_id"] or self.run_id
        return self.state

    def _send_here(self, command: str) -> dict[str, Any]:
        """A sender's answer to ``command``, from one pass of the same
        :class:`~numgrad.tracking.sender.Sender` in this process (mlflow imported here)."""
        from numgrad.tracking.sender import Sender

        if self._here is None:
            self._here = Sender(self.sweep_dir, self.uri)
        here = self._here
        try:
            if command == "drain":
                here.end_the_dead()
            here.send_all()  # the parent first: children go under it
            if command == "finish":
                here.give_up()
        except Exception:
            pass  # the store refused a record: here.error says which
        return here.state()

    def stop_sender(self) -> None:
        if self.sender is not None:
            self.sender.stop()

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
            recorder.finish(outcome.status)
        except Exception as err:
            print(f"numgrad: could not end the sweep's parent run {self.run_id} on "
                  f"{self.uri}: {describe_error(err)}", file=sys.stderr)  # fmt: skip
            return False
        if self.sender is None:
            return not self.settings.offline and recorder.synced
        state = self._ask("finish")
        self.stop_sender()
        return bool(state) and state["parent"]["synced"]
