"""Hydra's callback for every ``numgrad -m``: the sweep's parent run, its summary, its end.

``conf/config.yaml`` registers :class:`SweepCallback` under ``hydra.callbacks``, so it
serves any sweeper (basic, Optuna) and launcher (basic, joblib, Ray):

- ``on_multirun_start`` (main process, before the sweeper and launcher exist) opens
  the parent run, creating the store first, once, so that parallel workers never race
  on a new SQLite file. The parent's id reaches the jobs through the environment: set
  in this process (basic-launcher jobs run here; joblib's workers start later and
  inherit it) and, for Ray, in ``hydra.launcher.ray.init.runtime_env.env_vars`` of
  the config received here, the object Hydra then instantiates the launcher from.
- ``on_job_start``/``on_job_end`` (wherever the job runs) refuse a job once the sweep
  got a signal (:mod:`numgrad.sweep.stopping`) and send its prints to its log and
  back; ``on_job_end`` records a job that failed unexpectedly in its status file.
- ``on_multirun_end`` calls :func:`end_sweep`. Hydra skips it when the sweeper raises
  (a job's unexpected error, Ctrl-C, SIGTERM), so ``numgrad``'s entry point calls
  :func:`end_sweep` on those paths too; it runs once. A signal before the first job,
  during the jobs or in the end all end the sweep alike: a summary, the parent KILLED.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from numgrad import signals
from numgrad.config import check_uploaders
from numgrad.sweep import plan, progress, stopping, workers
from numgrad.sweep.jobs import record_failure
from numgrad.sweep.parent import FIGURES_DIR, SweepParent
from numgrad.sweep.summary import (
    SUMMARY_FILE,
    TABLE_FILE,
    SweepOutcome,
    collect_rows,
    write_summary,
    write_table,
)
from numgrad.tracking.ending import outcome as run_outcome
from numgrad.tracking.records import describe_error
from numgrad.tracking.uri import is_local, resolve_uri

REMOTE_LAUNCHERS = ("ray",)  # launchers whose jobs may run on other machines

_SWEEP: Sweep | None = None  # the sweep this process runs, between start and end
_LAST: SweepOutcome | None = None
RUN_DIR: list[str] = []  # a single run's dir, as Hydra is about to make it (for its errors)


class SweepNotStarted(BaseException):
    """The sweep could not start (its parent run, say): ``error`` says why.

    A BaseException, because Hydra turns an Exception raised in a callback into a
    warning and runs every job anyway, each failing the same way.
    """

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(str(error))


class SweepCallback(Callback):
    """Parent run, child links and summary for ``numgrad -m``.

    Stateless itself (Hydra pickles it to every worker): the sweep lives in this module,
    in the main process.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _SWEEP, _LAST
        if _SWEEP is not None:  # an earlier sweep in this process never ended
            end_sweep(RuntimeError("a new sweep started"))
        _LAST = None
        sweep = Sweep(config)
        try:
            sweep.start(config)
        except Exception as exc:
            sweep.abort()
            raise SweepNotStarted(exc) from exc
        except BaseException:  # a signal: the sweep ends as if stopped later (KILLED, a
            _SWEEP = sweep  # summary of jobs NOT_STARTED) when numgrad's entry ends it
            raise
        _SWEEP = sweep

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        end_sweep()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        RUN_DIR[:] = [str(config.hydra.run.dir)]

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        progress.job_output_back()  # an earlier job here stopped by a signal kept them
        if "MULTIRUN" in str(OmegaConf.select(config, "hydra.mode")):
            stopping.refuse_job(config)  # no job starts once the sweep got a signal
        progress.job_output_to_log(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        progress.job_output_back()
        if "MULTIRUN" in str(OmegaConf.select(config, "hydra.mode")):
            record_failure(config, job_return)
            if _SWEEP is not None:  # the job ran in the sweep's own process: its line at once
                _SWEEP.watch.poll()


def end_sweep(exc: BaseException | None = None) -> SweepOutcome | None:
    """End this process's sweep, if one is open; return how it ended (also later).

    ``exc`` is what stopped the sweep, if anything: KeyboardInterrupt or Terminated make
    the parent KILLED, anything else FAILED; without it the parent is FINISHED when
    every job finished, else FAILED. Safe to call any number of times.
    """
    global _SWEEP, _LAST
    sweep, _SWEEP = _SWEEP, None
    if sweep is not None:
        _LAST = sweep.end(exc)
    return _LAST


class Sweep:
    """One multirun, seen from the main process."""

    def __init__(self, config: DictConfig) -> None:
        self.started = time.time()
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.overrides = [str(o) for o in config.hydra.overrides.task]
        params = OmegaConf.select(config, "hydra.sweeper.params")
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.launcher = plan.short_target(OmegaConf.select(config, "hydra.launcher._target_"))
        self.sweeper = plan.short_target(OmegaConf.select(config, "hydra.sweeper._target_"))
        self.settings = config.tracking
        self.name = plan.sweep_name(self.overrides, self.params, self.settings.run_name)
        self.parent: SweepParent | None = None
        self.watch: progress.JobWatch | None = None
        self._env_before: dict[str, str | None] = {}
        self._exits = contextlib.ExitStack()

    def start(self, config: DictConfig) -> None:
        plan.refuse_sweep_wide(self.params, self.overrides)
        check_uploaders(self.settings.uploaders)  # the sender's, before it starts
        stopping.clear(self.sweep_dir)  # an earlier sweep's, in a reused sweep dir
        if self.settings.enabled:
            self.parent = SweepParent(self.settings, self.sweep_dir, self.name)
            tags = plan.parent_tags(
                self.sweep_dir, self.overrides, self.params, self.sweeper, self.launcher
            )
            self.parent.open(tags, remote_jobs=self.remote)
            self._export(config)
        self._warn_remote_store()
        self._exits.enter_context(signals.on_signal(self._stop))
        self._exits.enter_context(progress.launchers_quiet())
        bar = progress.bar_wanted(OmegaConf.select(config, "progress"), sys.stderr)
        total = plan.job_count(config, plan.planned_jobs(self.sweeper, self.params, self.overrides))
        self.watch = progress.JobWatch(self.sweep_dir, self.started, total, bar=bar)
        self.watch.start()  # its thread, not blocking them, is where the signals come in
        if "joblib" in self.launcher:  # its workers get a signal only in a job, never idle
            self._exits.enter_context(workers.spawned_blocked())

    def _stop(self, signum: int) -> None:
        """A signal stops the sweep: no job starts now; pool workers end their runs."""
        if stopping.stopping(self.sweep_dir, worker=False):
            return  # a second Ctrl-C while the workers end their runs: stop waiting
        stopping.mark(self.sweep_dir, signum)
        if "joblib" in self.launcher:  # on Ctrl-C joblib SIGKILLs its workers at once
            workers.stop_workers(signum, self._running_by_pid)

    def _running_by_pid(self) -> dict[int, str]:
        return self.parent.running_by_pid() if self.parent is not None else {}

    @property
    def remote(self) -> bool:
        """Whether jobs may run on other machines (the sender cannot follow them there)."""
        return any(name in self.launcher for name in REMOTE_LAUNCHERS)

    def _export(self, config: DictConfig) -> None:
        """Hand the parent (and the store) to every job, wherever it runs."""
        env = self.parent.job_env(remote=self.remote)
        for key, value in env.items():
            self._env_before[key] = os.environ.get(key)
            os.environ[key] = value
        init = OmegaConf.select(config, "hydra.launcher.ray.init")
        if isinstance(init, DictConfig):
            if not self.settings.uri:
                # The store this process resolved (absolute), not the worker's own default.
                env["MLFLOW_TRACKING_URI"] = self.parent.uri
            env["NUMGRAD_PID"] = os.environ.get("NUMGRAD_PID", str(os.getpid()))
            with read_write(config.hydra), open_dict(config.hydra):
                runtime_env = init.get("runtime_env") or {}
                if isinstance(runtime_env, DictConfig):
                    runtime_env = OmegaConf.to_container(runtime_env)
                runtime_env = dict(runtime_env)
                runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env}
                init["runtime_env"] = runtime_env

    def _warn_remote_store(self) -> None:
        if not self.settings.enabled or not self.remote:
            return
        uri = self.parent.uri if self.parent is not None else resolve_uri(self.settings.uri)
        if is_local(uri):
            print(
                f"numgrad: warning: hydra/launcher={self.launcher} with the local store {uri}: "
                "jobs on other machines cannot reach it; use a tracking server "
                "(tracking.uri=http://host:5000)",
                file=sys.stderr,
            )

    def end(self, exc: BaseException | None) -> SweepOutcome:
        """Summary, figures, the parent's status, a report; never raises.

        A signal meanwhile (the first one landing in the end, or a second one) does not
        cut the end short: the summary is written, the parent ends KILLED, and the
        outcome keeps the signal for numgrad's exit status.
        """
        with signals.held(absorb=True):
            return self._end(exc)

    def _end(self, exc: BaseException | None) -> SweepOutcome:
        progress.job_output_back()  # a job here stopped by a signal had no on_job_end
        outcome = SweepOutcome("FAILED", [], offline=bool(self.settings.offline))
        parent = self.parent if self.parent is not None and self.parent.recorder else None
        try:
            children: list[dict[str, Any]] = []
            if parent is not None:
                if signals.signal_of(exc):  # pool workers end their runs on the signal
                    parent.wait_for_running(set(parent.running_by_pid()) - {os.getpid()})
                state = parent.drain()
                children = [*state.get("children", {}).values(), *state.get("remote", [])]
                if state.get("error"):
                    outcome.notes.append(f"the store refused a record: {state['error']}")
            # Stopped early, the sweeper never launched some jobs: the plan names them.
            planned = plan.planned_jobs(self.sweeper, self.params, self.overrides) if exc else None
            outcome.rows = collect_rows(
                self.sweep_dir, self.started, children, planned=planned,
                interrupted=bool(signals.signal_of(exc) or signals.pending()),
            )  # fmt: skip
            outcome.status = "FAILED" if exc or outcome.failed else "FINISHED"
            outcome.summary = self._write_summary(outcome)
        except Exception as err:
            outcome.notes.append(f"sweep summary incomplete: {describe_error(err)}")
        finally:
            outcome.signal = signals.signal_of(exc) or signals.pending()
            if outcome.signal:  # stopped by a signal, whenever it came
                outcome.status = "KILLED"
            if parent is not None and parent.recorder.journal is not None:
                if outcome.signal:
                    stop = signals.exception_for(outcome.signal)
                    parent.recorder.record("tags", tags=run_outcome(stop, None)[1])
                outcome.parent_synced = parent.finish(outcome, exc)
                outcome.parent_run_id = parent.run_id
                if not outcome.parent_synced and not outcome.offline:
                    outcome.notes.append(parent.recorder.local_note())
            if parent is not None:
                parent.stop_sender()
            stopping.clear(self.sweep_dir)
            self._restore()
        outcome.elapsed = time.time() - self.started
        if self.watch is not None:  # None: a signal came before the sweep started
            self.watch.finish(outcome.rows)
        progress.report(outcome, *progress.where(parent, self.name, self.sweep_dir))
        return outcome

    def abort(self) -> None:
        """Undo a start that failed part-way: no job has run, so no summary either."""
        recorder = self.parent.recorder if self.parent is not None else None
        if recorder is not None and recorder.journal is not None:
            with contextlib.suppress(Exception):
                recorder.finish("FAILED")
        if self.parent is not None:
            self.parent.stop_sender()
        self._restore()
        with contextlib.suppress(OSError):
            self.sweep_dir.rmdir()  # only if empty

    def _write_summary(self, outcome: SweepOutcome) -> Path:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = write_summary(outcome.rows, self.sweep_dir / SUMMARY_FILE)
        write_table(outcome.rows, self.sweep_dir / TABLE_FILE)
        if outcome.rows:
            try:
                from numgrad.plots.sweep import render_sweep

                render_sweep(outcome.rows, self.sweep_dir / FIGURES_DIR)
            except Exception as exc:
                outcome.notes.append(f"sweep figures not drawn: {describe_error(exc)}")
        return path

    def _restore(self) -> None:
        for key, value in self._env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env_before = {}
        self._exits.close()
