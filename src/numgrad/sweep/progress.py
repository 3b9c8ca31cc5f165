"""What a person sees while a sweep runs and when it ends: a line per job, a bar, the end.

Jobs run in this process (basic launcher), in pool workers (joblib) or on Ray; each
leaves its status file (:mod:`numgrad.sweep.jobs`) in its folder as it ends. A thread of the
main process looks for new ones a few times a second and prints one line per job as
it ends, on every launcher; its output (the summary, W_final, where its run went)
goes to the job's ``numgrad.log``. On a terminal a tqdm bar on stderr counts the
jobs finished and failed, with the time elapsed and left; on a pipe or in CI
(``$CI`` set) there is no bar. When the sweep ends, the jobs no file announced (killed
ones, runs found only in the store) get their line, then :func:`report` prints the
counts by status, the best job and where everything is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from omegaconf import OmegaConf

from numgrad.sweep.jobs import JOB_STATUS_FILE, read_job_status
from numgrad.sweep.parent import SweepParent
from numgrad.sweep.summary import DONE, NOT_STARTED, SweepOutcome, best_job
from numgrad.tracking import pages

POLL_SECONDS = 0.25  # how soon a job's end is seen; a glob of the sweep dir costs ~1 ms
# The launchers' loggers: each logs a line per job as it launches it, which numgrad's
# line per job as it ends replaces.
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core",
)

_JOB_OUTPUT = contextlib.ExitStack()  # while a sweep's job runs in this process


def job_output_to_log(config: Any) -> None:
    """In a sweep, send what the job starting prints (its summary, W_final, where its run
    went, its warnings) to its log file, where Hydra's job logging writes too, until
    :func:`job_output_back`. ``config`` is the job's, ``hydra`` node included."""
    job_output_back()
    if "MULTIRUN" not in str(OmegaConf.select(config, "hydra.mode")):
        return
    log = Path(str(config.hydra.runtime.output_dir), f"{config.hydra.job.name}.log")
    stream = _JOB_OUTPUT.enter_context(open(log, "a", buffering=1))
    _JOB_OUTPUT.enter_context(contextlib.redirect_stdout(stream))
    _JOB_OUTPUT.enter_context(contextlib.redirect_stderr(stream))


def job_output_back() -> None:
    """This process's own stdout and stderr again (a no-op when no job holds them)."""
    _JOB_OUTPUT.close()


@contextlib.contextmanager
def launchers_quiet() -> Iterator[None]:
    """Hydra's launchers log at WARNING and above only, meanwhile."""
    import logging

    loggers = [logging.getLogger(name) for name in LAUNCHER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def bar_wanted(
    setting: bool | None, stream: TextIO, environ: Mapping[str, str] = os.environ
) -> bool:
    """The sweep's bar: ``progress`` if set, else on a terminal outside CI.

    Examples
    --------
    >>> import io
    >>> bar_wanted(None, io.StringIO()), bar_wanted(True, io.StringIO())
    (False, True)
    """
    if setting is not None:
        return bool(setting)
    return stream.isatty() and not environ.get("CI")


def job_line(row: Mapping[str, Any], seconds: float | None, count: str) -> str:
    """One job's line: number, overrides, status, final numbers or the reason it failed.

    Examples
    --------
    >>> row = {"job": 2, "overrides": "optimizer.lr=1.0", "status": "FINISHED",
    ...        "final_loss": 0.56891362, "final_accuracy": 0.7, "steps_taken": 100}
    >>> job_line(row, 0.51, "[3/6]")  # doctest: +NORMALIZE_WHITESPACE
    'numgrad: [3/6] job 2 (optimizer.lr=1.0) FINISHED after 0.51 s:
     final loss 0.568914, accuracy 0.7000, 100 steps'
    >>> job_line({"job": 0, "overrides": "optimizer.lr=-1", "status": "FAILED",
    ...           "error": "ConfigError: invalid optimizer.lr=-1.0"}, None, "[1/6]")
    'numgrad: [1/6] job 0 (optimizer.lr=-1) FAILED: ConfigError: invalid optimizer.lr=-1.0'
    """
    job = "?" if row.get("job") is None else row["job"]
    after = "" if seconds is None else f" after {seconds:.{1 if seconds >= 1 else 2}f} s"
    head = f"numgrad: {count} job {job} ({row.get('overrides') or ''}) {row['status']}{after}"
    if row["status"] not in DONE:
        return head + (f": {row['error']}" if row.get("error") else "")
    parts = []
    if row.get("final_loss") is not None:
        parts.append(f"final loss {row['final_loss']:.6g}")
    if row.get("final_accuracy") is not None:
        parts.append(f"accuracy {row['final_accuracy']:.4f}")
    if row.get("grad_rel_error") is not None:
        parts.append(f"grad rel. error {row['grad_rel_error']:.3g}")
    if row.get("steps_taken") is not None:
        parts.append(f"{int(row['steps_taken'])} steps")
    return head + (f": {', '.join(parts)}" if parts else "")


def job_seconds(job_dir: Path) -> float | None:
    """From the job's start (Hydra writes its ``.hydra/`` first) to its status file."""
    try:
        start = (job_dir / ".hydra" / "overrides.yaml").stat().st_mtime
        return max(0.0, (job_dir / JOB_STATUS_FILE).stat().st_mtime - start)
    except OSError:
        return None


class JobWatch:
    """The sweep's live output: a line per job as its status file appears, and the bar.

    ``started`` (epoch seconds) leaves out files of an earlier sweep in the same dir;
    ``total`` is the number of jobs, when the sweeper knows it in advance.
    """

    def __init__(
        self, sweep_dir: Path, started: float, total: int | None, *, bar: bool,
        out: TextIO | None = None, err: TextIO | None = None,
    ) -> None:  # fmt: skip
        # The streams as they are now: a job in this process sends sys.stdout to its log.
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.sweep_dir, self.started, self.total = sweep_dir, started, total
        self.seen: set[str] = set()  # job folders (or run ids) whose line was printed
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.bar: Any = None
        self._want_bar = bar

    def start(self) -> None:
        """Say what runs and where its output goes; look for jobs' ends from now on."""
        jobs = f"{self.total} jobs" if self.total else "jobs"
        print(f"numgrad: sweep of {jobs} in {self.sweep_dir} (each job's own output: "
              "<job>/numgrad.log)", file=self.out, flush=True)  # fmt: skip
        if self._want_bar:
            from tqdm import tqdm

            try:  # a terminal that does not know its size (`script`, some CIs) says 0 x 0,
                # on which tqdm draws nothing: give it one
                sized = os.get_terminal_size(self.err.fileno()).columns > 0
            except (OSError, ValueError):
                sized = False
            self.bar = tqdm(
                total=self.total, desc="sweep", unit="job", file=self.err, ascii=True,
                dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 24,
                mininterval=0.5,
            )  # fmt: skip
        self._thread = threading.Thread(target=self._loop, name="numgrad-sweep-watch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> None:
        """Print the line of every job whose status file appeared since the last look."""
        with self._lock:
            ended = []
            with contextlib.suppress(OSError), os.scandir(self.sweep_dir) as folders:
                # One listing, and a look only into folders not yet announced: ~1 ms a look
                # at a sweep of 1,000 jobs.
                for folder in folders:
                    if folder.path in self.seen or not folder.is_dir():
                        continue
                    path = Path(folder.path, JOB_STATUS_FILE)
                    with contextlib.suppress(OSError):  # older than the sweep: an earlier one's
                        when = path.stat().st_mtime
                        if when >= self.started - 1.0:
                            ended.append((when, folder.path, path))
            for _, key, path in sorted(ended):  # in the order the jobs ended
                record = read_job_status(path)
                if record is None or record.get("status") == NOT_STARTED:  # a stopping sweep's
                    continue
                row = {**record, "overrides": " ".join(record.get("overrides") or [])}
                self._announce(key, row, job_seconds(path.parent))

    def finish(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Stop looking; print the jobs no status file announced; close the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        with self._lock:
            for row in rows:
                where = row.get("output_dir")
                key = str(where) if where else str(row.get("run_id") or id(row))
                if key not in self.seen and row["status"] != NOT_STARTED:
                    self._announce(key, row, None)
            if self.bar is not None:
                self.bar.close()

    def _announce(self, key: str, row: Mapping[str, Any], seconds: float | None) -> None:
        self.seen.add(key)
        self.failed += row["status"] not in DONE
        done = len(self.seen)
        count = f"[{done}/{self.total}]" if self.total else f"[{done}]"
        line = job_line(row, seconds, count)
        if self.bar is None:
            print(line, file=self.out, flush=True)
            return
        self.bar.clear()  # the line goes above the bar, which is drawn again below it
        print(line, file=self.out, flush=True)
        if self.failed:
            self.bar.set_postfix_str(f"{self.failed} failed", refresh=False)
        self.bar.update(1)
        self.bar.refresh()


def where(parent: SweepParent | None, name: str, sweep_dir: Path) -> tuple[list[str], Any]:
    """Lines naming a sweep's parent run and its page (and how to serve the store when no
    UI answers), or how to upload an offline sweep; and a child run's page by its id."""
    if parent is None or parent.run_id is None:
        offline = parent is not None and parent.settings.offline
        return [
            f"numgrad: recorded locally; upload it with: numgrad-sync {sweep_dir}"
        ] * offline, None
    uri, run_id = parent.uri, parent.run_id
    line = f"numgrad: parent run {run_id} ({name}) on {uri}"
    experiment = (parent.state.get("parent") or {}).get("experiment_id")
    if experiment is None:
        return [line], None
    hint = pages.serve_hint(uri)
    line += f"; page: {pages.page_url(uri, pages.run_page(experiment, run_id))}"
    return [line, *([hint] if hint else [])], (
        lambda child: pages.page_url(uri, pages.run_page(experiment, child))
    )


def report(
    outcome: SweepOutcome, where: Iterable[str], run_url: Callable[[str], str] | None
) -> None:
    """The sweep's last lines: counts by status, the failed jobs, the best job, the pages.

    ``where`` are lines naming the parent run (or how to upload it); ``run_url`` gives
    a child run's page. All goes to stdout, except the sweep's notes and, when it did
    not finish, its count and its failed jobs: stderr.
    """
    n, failed = len(outcome.rows), outcome.failed
    for note in outcome.notes:
        print(f"numgrad: {note}", file=sys.stderr)
    statuses = [row["status"] for row in outcome.rows]
    order = sorted(set(statuses), key=lambda s: (s not in DONE, s != "FAILED", s))
    by_status = ", ".join(f"{statuses.count(s)} {s}" for s in order)
    took = "" if outcome.elapsed is None else f" in {outcome.elapsed:.1f} s"
    if not failed and outcome.status == "FINISHED":
        print(f"numgrad: sweep FINISHED: {n} jobs ({by_status}){took}", flush=True)
    else:
        sys.stdout.flush()  # what stdout holds comes first, also through `2>&1 | ...`
        what = (  # KILLED with every job finished: a signal in the sweep's end
            f"{len(failed)} of {n} jobs did not finish" if failed
            else f"all {n} jobs finished" if n else "no job ran"
        )  # fmt: skip
        print(f"numgrad: sweep {outcome.status}: {what} ({by_status}){took}", file=sys.stderr)
        for row in failed:
            job = "?" if row["job"] is None else row["job"]
            error = f": {row['error']}" if row["error"] else ""
            print(f"numgrad:   job {job} ({row['overrides']}) {row['status']}{error}",
                  file=sys.stderr)  # fmt: skip
    ranked = best_job(outcome.rows)
    if ranked is not None:
        best, column = ranked
        held_out = column == "final_test_loss"  # its own accuracy beside it, not training's
        accuracy = best.get("final_test_accuracy" if held_out else "final_accuracy")
        shown = f"lowest {column} {best[column]:.10g}" + (
            f", {'held-out ' * held_out}accuracy {accuracy:.4f}" if accuracy is not None else ""
        )
        url = run_url(best["run_id"]) if run_url and best.get("run_id") else None
        print(f"numgrad: best job {best['job']} ({best['overrides']}): {shown}"
              + (f"; page: {url}" if url else ""))  # fmt: skip
    for line in where:
        print(line)
    print(f"numgrad: summary {outcome.summary}" if outcome.summary else "numgrad: no summary")
    sys.stdout.flush()
