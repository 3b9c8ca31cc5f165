"""The ``numgrad`` command: Hydra composes the config, :func:`numgrad.runner.execute` runs it.

Here live only the entry point and Hydra's task function :func:`job`. Everything heavy
is imported inside :func:`main`, under :func:`numgrad.command.run_command`: SIGINT and
SIGTERM are routed to numgrad first, so a Ctrl-C at any moment prints one line, never a
traceback. The exit statuses are :mod:`numgrad.command`'s table; a sweep's comes from
its summary (:attr:`numgrad.sweep.summary.SweepOutcome.exit_status`).
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numgrad import command, signals, speed
from numgrad.command import INTERRUPTED, TERMINATED, USAGE

if TYPE_CHECKING:
    from numgrad.runner import RunOutcome

CONFIG_DIR = str(Path(__file__).parent / "conf")
NOTHING_RAN = (USAGE, INTERRUPTED, TERMINATED)  # statuses after which no run dir is kept


def main() -> None:
    """Console entry point (``numgrad`` and ``python -m numgrad``)."""
    # Hydra prints composition errors over several lines plus a hint; asking it to
    # raise instead lets us print one line. A user who set the variable gets Hydra's.
    own_errors = "HYDRA_FULL_ERROR" not in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    os.environ["NUMGRAD_PID"] = str(os.getpid())  # in the run dir's name (conf/config.yaml)
    speed.skip_exit_collections()
    command.run_command("numgrad", lambda: _compose_and_run(own_errors))


def _remove_hydras_run_dir() -> None:
    """The run dir Hydra made for a single run that never got going, if it made one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    from omegaconf import OmegaConf

    # select(): a signal can land after Hydra set its config, before it set the run dir
    # (reading a value not set yet raises, and the signal's one line became a traceback).
    hc = HydraConfig.get()
    output_dir = OmegaConf.select(hc, "runtime.output_dir", default=None)
    if OmegaConf.select(hc, "mode", default=None) == RunMode.RUN and output_dir:
        remove_unused_output_dir(Path(output_dir))


def _compose_and_run(own_errors: bool) -> int:
    import hydra

    from numgrad.config import register_configs
    from numgrad.sweep.callback import SweepNotStarted, end_sweep

    register_configs()
    try:
        hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(job)()
    except BaseException as exc:
        # Hydra calls no on_multirun_end when the sweeper raises (a job's unexpected
        # error, Ctrl-C, SIGTERM): end the sweep's parent run here, KILLED or FAILED.
        outcome = end_sweep(exc)
        if outcome is not None and outcome.signal and not signals.signal_of(exc):
            raise signals.exception_for(outcome.signal) from None  # one came in the end
        error = exc.error if isinstance(exc, SweepNotStarted) else exc  # the reason
        error = _as_usage(error) if own_errors else error
        if command.exit_status(error) in NOTHING_RAN:
            _remove_hydras_run_dir()  # a signal may land before job() could do it
        if error is exc:
            raise
        raise error from None
    outcome = end_sweep()  # a no-op after on_multirun_end; None for a single run
    if outcome is not None and outcome.signal:  # a signal in the sweep's end: 130 or 143
        raise signals.exception_for(outcome.signal)
    return 0 if outcome is None else outcome.exit_status


def _as_usage(exc: BaseException) -> BaseException:
    """Hydra's and OmegaConf's errors (composition, overrides, types), and a run dir Hydra
    could not write, as numgrad's bad input."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from numgrad.sweep.callback import RUN_DIR

    if isinstance(exc, HydraException | OmegaConfBaseException):
        return command.UsageError(command.one_line(exc))
    if isinstance(exc, OSError):  # Hydra could not make the run dir, its .hydra files or
        # its log (disk full, read-only): nothing ran; one line naming where
        where = os.path.abspath(exc.filename or next(iter(RUN_DIR), "."))
        return command.UsageError(f"cannot write {where}: {exc.strerror or exc}")
    return exc


def job(cfg: Any) -> float:
    """Hydra's task function: one run, in the main process or a sweep's worker."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    output_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        return _sweep_job(cfg, hc.job.num, output_dir, overrides)
    try:
        return single_run(cfg, output_dir, overrides).final_loss
    except BaseException as exc:
        if command.exit_status(exc) in (None, INTERRUPTED, TERMINATED):
            raise  # a bug (with its traceback), or a signal for main() to report
        # Exit here: an exception would make Hydra print its own lines first.
        sys.exit(command.report("numgrad", exc))


def single_run(cfg: Any, output_dir: Path, overrides: list[str]) -> RunOutcome:
    """One run in its run dir, as ``numgrad`` and ``numgrad-rerun`` make it; its outcome.

    Raises what ended it (:mod:`numgrad.command` says which exit status that is), and
    :class:`~numgrad.command.NotSynced` for a run its store does not hold. When nothing
    ran (bad input, a signal before the run's journal), the run dir is removed.
    """
    show = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    try:
        from numgrad.runner import execute  # a signal during this import is in the try too

        outcome = execute(cfg, output_dir=output_dir, overrides=overrides, progress=show)
    except BaseException as exc:
        error = _as_usage(exc)  # an interpolation that fails as validate() reads it
        if command.exit_status(error) in NOTHING_RAN:
            remove_unused_output_dir(output_dir)  # nothing ran: leave nothing
        if error is exc:
            raise
        raise error from None
    if outcome.offline:
        print(f"numgrad: {outcome.local_note}")  # what the user asked for: not a problem
    elif not outcome.synced:
        raise command.NotSynced(outcome.local_note)
    return outcome


def _sweep_job(cfg: Any, num: int, output_dir: Path, overrides: list[str]) -> float:
    """One job of a sweep: its outcome in its status file; a failure is the worst value."""
    from numgrad.runner import execute
    from numgrad.sweep.jobs import FINISHED_NOT_SYNCED, write_job_status
    from numgrad.sweep.workers import bound_to_sweep

    show = bool(cfg.progress)  # None: no bars from jobs running side by side
    # A pool worker's job dies with its sweep; raising(): its main thread needs it too.
    with bound_to_sweep(partial(remove_unused_output_dir, output_dir)), signals.raising():
        try:
            outcome = execute(cfg, output_dir=output_dir, overrides=overrides, progress=show)
        except BaseException as exc:
            exc = _as_usage(exc)
            if command.exit_status(exc) in (None, INTERRUPTED, TERMINATED):
                raise  # a bug (with its traceback), or a signal for main() to report
            # One bad cell must not stop the sweep: record it, tell the user, and give
            # sweepers the worst value (never NaN, which they cannot rank).
            print(f"numgrad: job {num} ({' '.join(overrides)}) failed: {exc}", file=sys.stderr)
            write_job_status(output_dir, overrides, "FAILED", job=num, pid=os.getpid(),
                             error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return float("inf")
    if outcome.offline:
        print(f"numgrad: {outcome.local_note}")  # what the user asked for: not a problem
    elif not outcome.synced:
        print(f"numgrad: job {num}: {outcome.local_note}", file=sys.stderr)
    write_job_status(
        output_dir, overrides, "FINISHED" if outcome.synced else FINISHED_NOT_SYNCED,
        job=num, pid=os.getpid(), **_job_fields(outcome),
    )  # fmt: skip
    return outcome.final_loss


def _job_fields(outcome: Any) -> dict[str, Any]:
    import dataclasses

    fields = dataclasses.asdict(outcome)
    fields.pop("local_note")
    return fields


def remove_unused_output_dir(output_dir: Path) -> None:
    """Remove what Hydra wrote for a run that never started, and its now-empty parents.

    Only Hydra's own files, only when no run journal is there, and no folder above the
    current directory: never anything the user owns.
    """
    from numgrad.tracking.journal import JOURNAL_FILE

    if (output_dir / JOURNAL_FILE).exists():
        return  # the run started: its records stay
    shutil.rmtree(output_dir / ".hydra", ignore_errors=True)
    (output_dir / "numgrad.log").unlink(missing_ok=True)
    cwd = Path.cwd().resolve()
    directory = output_dir.resolve()
    while directory != cwd and cwd in directory.parents:
        try:
            directory.rmdir()  # only if empty
        except OSError:
            return
        directory = directory.parent
