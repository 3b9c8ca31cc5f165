"""The ``numgrad`` command: Hydra composes the config, :func:`numgrad.runner.run` runs it.

Here live only the entry point, the table of which outcome gives which exit status,
and :func:`one_line` for Hydra's multi-line messages. Everything heavy is imported
inside :func:`main`, after SIGINT and SIGTERM are routed to numgrad: a Ctrl-C at any
moment prints one line, never a traceback.

Exit statuses: 0 done; 1 a run failed or diverged (or a sweep's job did); 2 bad input
or tracking settings, nothing run; 75 finished, but recorded only locally (the
tracking store was unreachable; ``numgrad-sync`` uploads it); 130 Ctrl-C; 143 SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from numgrad import signals, speed

CONFIG_DIR = str(Path(__file__).parent / "conf")
FAILED, USAGE, NOT_SYNCED, INTERRUPTED, TERMINATED = 1, 2, 75, 130, 143


# Which exception ends numgrad with which status, first match wins. Classes are named
# by module, and looked up only where that module is loaded: an exception cannot come
# from a module that was never imported, and a Ctrl-C in the middle of importing one
# must not import it again here.
EXIT_STATUS: tuple[tuple[str, str, int], ...] = (
    ("numgrad.tracking.recorder", "NotSynced", NOT_SYNCED),
    ("numgrad.config", "ConfigError", USAGE),
    ("hydra.errors", "HydraException", USAGE),
    ("omegaconf.errors", "OmegaConfBaseException", USAGE),
    ("numgrad.tracking.uri", "TrackingError", USAGE),
    ("numgrad.tracking.journal", "JournalError", FAILED),
    ("builtins", "ArithmeticError", FAILED),  # Diverged, StepTooSmall
)


def exit_status(exc: BaseException) -> int | None:
    """The exit status for an exception that ends ``numgrad``; None if it is a bug."""
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, signals.Terminated):
        return TERMINATED
    for module, name, status in EXIT_STATUS:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return status
    return None


def main() -> None:
    """Console entry point (``numgrad`` and ``python -m numgrad``)."""
    # Hydra prints composition errors over several lines plus a hint; asking it to
    # raise instead lets us print one line. A user who set the variable gets Hydra's.
    own_errors = "HYDRA_FULL_ERROR" not in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    os.environ["NUMGRAD_PID"] = str(os.getpid())  # in the run dir's name (conf/config.yaml)
    speed.skip_exit_collections()
    with signals.raising():
        try:
            status = _compose_and_run()
        except BaseException as exc:
            not_started = getattr(sys.modules.get("numgrad.sweep.callback"), "SweepNotStarted", ())
            if isinstance(exc, not_started):
                exc = exc.error  # the reason, reported like any other
            status = exit_status(exc) if own_errors or _is_signal(exc) else None
            if status is None:
                raise
            if status in (USAGE, INTERRUPTED, TERMINATED):
                _remove_hydras_run_dir()  # a signal may land before job() could do it
            print(f"numgrad: {_describe(exc)}", file=sys.stderr)
    sys.exit(status)


def _remove_hydras_run_dir() -> None:
    """The run dir Hydra made for a single run that never got going, if it made one."""
    hydra_config = getattr(sys.modules.get("hydra.core.hydra_config"), "HydraConfig", None)
    if hydra_config is None or not hydra_config.initialized():
        return
    hc = hydra_config.get()
    if str(hc.mode) == "RunMode.RUN" and hc.runtime.output_dir:
        _remove_unused_output_dir(Path(hc.runtime.output_dir))


def _compose_and_run() -> int:
    import hydra

    from numgrad.config import register_configs
    from numgrad.sweep.callback import end_sweep

    register_configs()
    try:
        hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")(job)()
    except BaseException as exc:
        # Hydra calls no on_multirun_end when the sweeper raises (a job's unexpected
        # error, Ctrl-C, SIGTERM): end the sweep's parent run here, KILLED or FAILED.
        end_sweep(exc)
        raise
    outcome = end_sweep()  # a no-op after on_multirun_end; None for a single run
    return 0 if outcome is None else outcome.exit_status


def job(cfg: Any) -> float:
    """Hydra's task function: one run, in the main process or a sweep's worker."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from numgrad.jobs import FINISHED_NOT_SYNCED, write_job_status
    from numgrad.runner import execute
    from numgrad.tracking.recorder import NotSynced

    hc = HydraConfig.get()
    output_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    show = sys.stderr.isatty() and not multirun if cfg.progress is None else cfg.progress
    with signals.raising():  # a pool worker's main thread needs it as much as ours
        try:
            outcome = execute(cfg, output_dir=output_dir, overrides=overrides, progress=show)
        except BaseException as exc:
            status = exit_status(exc)
            if status in (USAGE, INTERRUPTED, TERMINATED) and not multirun:
                _remove_unused_output_dir(output_dir)  # nothing ran: leave nothing
            if status in (None, INTERRUPTED, TERMINATED):
                raise  # a bug (with its traceback), or a signal for main() to report
            if not multirun:
                # Exit here: an exception would make Hydra print its own lines first.
                print(f"numgrad: {_describe(exc)}", file=sys.stderr)
                sys.exit(status)
            # One bad cell must not stop the sweep: record it, tell the user, and give
            # sweepers the worst value (never NaN, which they cannot rank).
            print(f"numgrad: job {hc.job.num} ({' '.join(overrides)}) failed: {exc}",
                  file=sys.stderr)  # fmt: skip
            write_job_status(output_dir, overrides, "FAILED", job=hc.job.num, pid=os.getpid(),
                             error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            return float("inf")
    if outcome.offline:
        print(f"numgrad: {outcome.local_note}")  # what the user asked for: not a problem
    elif not outcome.synced:
        if not multirun:
            raise NotSynced(outcome.local_note)
        print(f"numgrad: job {hc.job.num}: {outcome.local_note}", file=sys.stderr)
    if multirun:  # only the sweep callback reads it
        write_job_status(
            output_dir, overrides, "FINISHED" if outcome.synced else FINISHED_NOT_SYNCED,
            job=hc.job.num, pid=os.getpid(), **_job_fields(outcome),
        )  # fmt: skip
    return outcome.final_loss


def _job_fields(outcome: Any) -> dict[str, Any]:
    import dataclasses

    fields = dataclasses.asdict(outcome)
    fields.pop("local_note")
    return fields


def _remove_unused_output_dir(output_dir: Path) -> None:
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


def _is_signal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | signals.Terminated)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, signals.Terminated):
        return "terminated"
    if exit_status(exc) == NOT_SYNCED:
        return str(exc)
    return f"error: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages folded into one line.

    Examples
    --------
    >>> nl, tab = chr(10), chr(9)
    >>> one_line(ValueError(f"Could not find 'data/x'{nl}Options:{nl}{tab}a{nl}{tab}b"))
    "Could not find 'data/x'; Options: a, b"
    """
    parts = [str(exc)]
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in parts[0]:
        parts.append(str(cause))
    text = "; ".join(parts)
    text = re.sub(r"\n\s*(full_key|object_type|reference_type)=?:?.*", "", text)
    text = re.sub(r":\s*\n\s*\t", ": ", text)
    text = re.sub(r"\n\s*\t", ", ", text)
    text = re.sub(r"\s*\n+\s*", "; ", text).strip("; ")
    text = re.sub(r"; (Config search path|See https://hydra\.cc).*", "", text)
    override = getattr(exc, "override", None)  # Hydra's OverrideParseException
    if override is not None and str(override) not in text:
        text = f"cannot parse override {str(override)!r}: {text}"
    return text
