"""What a person sees while a sweep runs and when it ends (numgrad.sweep.progress).

The whole-process tests run the installed ``numgrad -m`` on a pipe (as in CI, or
``| tee``) and under a pseudo-terminal (Python's ``pty``, as a person's terminal), and
check the lines against the store (``MlflowClient``) and the jobs' folders.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import struct
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from numgrad.sweep import progress
from numgrad.sweep.jobs import write_job_status
from numgrad.sweep.summary import SweepOutcome
from tests.conftest import answers, numgrad_env, running, wait_for

JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
JOB_LINE = re.compile(r"numgrad: \[(\d+)/(\d+)\] job (\d+) \((.*?)\) (\w+)(?: after [\d.]+ s)?")


def job_dir(sweep_dir: Path, num: int, overrides: list[str]) -> Path:
    """A job's folder as Hydra makes it when the job starts."""
    (sweep_dir / str(num) / ".hydra").mkdir(parents=True)
    (sweep_dir / str(num) / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in overrides)
    )
    return sweep_dir / str(num)


def test_a_line_per_job_as_its_status_file_appears_then_the_jobs_no_file_announced(tmp_path):
    sweep_dir, out = tmp_path / "multirun", io.StringIO()
    old = job_dir(sweep_dir, 9, ["optimizer.lr=9"])  # an earlier sweep's, in the same dir
    write_job_status(old, ["optimizer.lr=9"], "FINISHED", job=9, final_loss=0.0)
    os.utime(old / "numgrad_job.json", (time.time() - 3600,) * 2)
    watch = progress.JobWatch(sweep_dir, time.time(), 4, bar=False, out=out)
    watch.start()
    assert out.getvalue() == (
        f"numgrad: sweep of 4 jobs in {sweep_dir} (each job's own output: <job>/numgrad.log)\n"
    )
    first = job_dir(sweep_dir, 1, ["optimizer.lr=0.5"])
    write_job_status(first, ["optimizer.lr=0.5"], "FINISHED", job=1, final_loss=0.25,
                     final_accuracy=0.75, steps_taken=10, grad_rel_error=None)  # fmt: skip
    # Seen by the watch's own thread, while the "sweep" goes on.
    line = wait_for(lambda: out.getvalue().splitlines()[1:], timeout=10)[0]
    assert re.fullmatch(
        r"numgrad: \[1/4\] job 1 \(optimizer.lr=0.5\) FINISHED after [\d.]+ s: "
        r"final loss 0.25, accuracy 0.7500, 10 steps",
        line,
    )
    failed = job_dir(sweep_dir, 0, ["optimizer.lr=-1"])
    write_job_status(failed, ["optimizer.lr=-1"], "FAILED", job=0, error="ConfigError: bad")
    killed = job_dir(sweep_dir, 2, ["optimizer.lr=2"])  # started, never reported
    rows = [
        {"job": 2, "overrides": "optimizer.lr=2", "status": "KILLED", "error": "",
         "output_dir": str(killed), "run_id": "k"},
        {"job": 3, "overrides": "optimizer.lr=3", "status": "NOT_STARTED", "output_dir": None,
         "run_id": ""},
        {"job": 7, "overrides": "optimizer.lr=8", "status": "FINISHED", "output_dir": None,
         "run_id": "remote", "final_loss": 0.125},  # a Ray job's run, found in the store
    ]  # fmt: skip
    watch.finish(rows)
    lines = out.getvalue().splitlines()[2:]
    assert re.fullmatch(
        r"numgrad: \[2/4\] job 0 \(optimizer.lr=-1\) FAILED after [\d.]+ s: ConfigError: bad",
        lines[0],
    )
    assert lines[1:] == [
        "numgrad: [3/4] job 2 (optimizer.lr=2) KILLED",
        "numgrad: [4/4] job 7 (optimizer.lr=8) FINISHED: final loss 0.125",
    ]  # not the job never started, not the earlier sweep's


def test_the_bar_counts_the_jobs_and_the_failed_ones_up_to_the_total(tmp_path):
    sweep_dir, out, err = tmp_path / "multirun", io.StringIO(), io.StringIO()
    watch = progress.JobWatch(sweep_dir, time.time(), 3, bar=True, out=out, err=err)
    watch.start()
    for num, status in enumerate(("FINISHED", "FAILED", "FINISHED")):
        write_job_status(job_dir(sweep_dir, num, [f"seed={num}"]), [f"seed={num}"], status,
                         job=num, final_loss=1.0)  # fmt: skip
    wait_for(lambda: len(out.getvalue().splitlines()) == 4, timeout=10)
    watch.finish([])
    drawn = err.getvalue().split("\r")
    assert re.search(r"sweep:\s+0%.*\| 0/3 ", drawn[1])  # drawn at the start
    # and its end: elapsed<left, the failed ones
    assert re.search(r"sweep: 100%.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d, .*, 1 failed\]", drawn[-1])
    assert "job" not in "".join(re.sub(r"\d+job/s|\?job/s", "", d) for d in drawn)  # lines: out


def test_the_bar_is_for_a_terminal_outside_ci():
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as tty:
        assert progress.bar_wanted(None, tty, environ={})
        assert not progress.bar_wanted(None, tty, environ={"CI": "true"})
        assert not progress.bar_wanted(False, tty, environ={})
    os.close(leader)
    assert not progress.bar_wanted(None, io.StringIO(), environ={})
    assert progress.bar_wanted(True, io.StringIO(), environ={"CI": "1"})


def test_a_sweep_jobs_prints_go_to_its_log_until_it_ends(tmp_path, capsys):
    job = OmegaConf.create({"hydra": {"mode": "RunMode.MULTIRUN", "job": {"name": "numgrad"},
                                      "runtime": {"output_dir": str(tmp_path)}}})  # fmt: skip
    progress.job_output_to_log(job)
    print("W_final =")
    print("a warning", file=sys.stderr)
    progress.job_output_back()
    print("the sweep's own line")
    assert (tmp_path / "numgrad.log").read_text() == "W_final =\na warning\n"
    assert capsys.readouterr().out == "the sweep's own line\n"
    single = OmegaConf.merge(job, {"hydra": {"mode": "RunMode.RUN"}})
    progress.job_output_to_log(single)  # a single run prints where it always did
    print("W_final =")
    progress.job_output_back()
    assert capsys.readouterr().out == "W_final =\n"


def test_the_last_lines_count_by_status_and_name_the_best_job_and_its_page(capsys):
    def row(job, status, loss, run_id=""):
        return {"job": job, "overrides": f"seed={job}", "status": status, "final_loss": loss,
                "final_accuracy": 0.5, "error": "Diverged: x" if status == "FAILED" else "",
                "run_id": run_id}  # fmt: skip

    rows = [row(0, "FINISHED", 0.5, "a"), row(1, "FAILED", None), row(2, "FINISHED", 0.25, "b")]
    outcome = SweepOutcome("FAILED", rows, summary=Path("/s/sweep_summary.csv"), elapsed=3.25)
    progress.report(outcome, ["numgrad: parent run p"], lambda run_id: f"http://ui/{run_id}")
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "numgrad: sweep FAILED: 1 of 3 jobs did not finish (2 FINISHED, 1 FAILED) in 3.2 s",
        "numgrad:   job 1 (seed=1) FAILED: Diverged: x",
    ]
    assert out.splitlines() == [
        "numgrad: best job 2 (seed=2): lowest final_loss 0.25, accuracy 0.5000; page: http://ui/b",
        "numgrad: parent run p",
        "numgrad: summary /s/sweep_summary.csv",
    ]


def test_a_best_job_ranked_by_held_out_loss_is_shown_with_its_held_out_accuracy(capsys):
    # Job 0 fits its training part best; job 1 does best on the held-out part, and its
    # held-out accuracy (0.9) is shown beside its held-out loss, not its training one (0.6).
    rows = [{"job": job, "overrides": f"seed={job}", "status": "FINISHED", "final_loss": loss,
             "final_accuracy": 0.6 + job / 10, "final_test_loss": test_loss,
             "final_test_accuracy": 0.8 + job / 10, "run_id": ""}
            for job, loss, test_loss in ((0, 0.1, 0.5), (1, 0.2, 0.3))]  # fmt: skip
    progress.report(SweepOutcome("FINISHED", rows, summary=None), [], None)
    assert capsys.readouterr().out.splitlines()[1] == (
        "numgrad: best job 1 (seed=1): lowest final_test_loss 0.3, held-out accuracy 0.9000"
    )


# ---------------------------------------------------------------- whole process


def job_lines(text: str) -> dict[int, re.Match]:
    found = [m for m in map(JOB_LINE.match, text.splitlines()) if m]
    jobs = {int(m[3]): m for m in found}
    assert len(jobs) == len(found), text  # one line per job
    assert [int(m[1]) for m in found] == list(range(1, len(found) + 1))  # counted as they end
    return jobs


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [(), JOBLIB], ids=["basic", "joblib"])
def test_a_sweep_on_a_pipe_prints_a_line_per_job_and_names_the_best_child(workdir, launcher):
    proc = workdir.run("optimizer.lr=-1,0.1,0.5,1.0", "data=blobs", "optimizer.steps=10",
                       *launcher, multirun=True, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    out, err = proc.stdout, proc.stderr
    client = MlflowClient(workdir.uri)
    experiment = client.get_experiment_by_name("numgrad").experiment_id
    runs = {r.data.params.get("optimizer.lr"): r for r in client.search_runs([experiment])}
    jobs = job_lines(out)
    assert sorted(jobs) == [0, 1, 2, 3] and {m[2] for m in jobs.values()} == {"4"}
    tail = "data=blobs optimizer.steps=10"
    assert jobs[0][4] == f"optimizer.lr=-1 {tail}" and jobs[0][5] == "FAILED"
    assert jobs[0].string.endswith(": ConfigError: invalid optimizer.lr=-1.0: must be > 0")
    for num, lr in ((1, "0.1"), (2, "0.5"), (3, "1.0")):
        final = runs[lr].data.metrics
        assert (jobs[num][4], jobs[num][5]) == (f"optimizer.lr={lr} {tail}", "FINISHED")
        assert jobs[num].string.endswith(
            f": final loss {final['final_loss']:.6g}, accuracy {final['final_accuracy']:.4f}, "
            "10 steps"
        )
    # A job's own output is in its folder, not among the sweep's lines.
    for text in (out, err):
        assert "W_final" not in text and "journaled in" not in text and "[HYDRA]" not in text
    log = (workdir.path / "multirun" / "1" / "numgrad.log").read_text()
    assert "W_final =" in log and "journaled in" in log
    assert "\r" not in out + err and "sweep:" not in err  # no bar on a pipe
    # The end: counts, the failed job again, the best child with its page, the summary.
    assert "numgrad: sweep FAILED: 1 of 4 jobs did not finish (3 FINISHED, 1 FAILED) in " in err
    best = min((r for r in runs.values() if r.info.status == "FINISHED"),
               key=lambda r: r.data.metrics["final_loss"])  # fmt: skip
    page = f"#/experiments/{experiment}/runs/{best.info.run_id}?workflowType=machine_learning"
    lines = out.splitlines()
    end = lines.index(next(x for x in lines if x.startswith("numgrad: best job")))
    assert lines[end] == (
        f"numgrad: best job 3 (optimizer.lr=1.0 {tail}): lowest final_loss "
        f"{best.data.metrics['final_loss']:.10g}, accuracy "
        f"{best.data.metrics['final_accuracy']:.4f}; page: http://127.0.0.1:5000/{page}"
    )
    assert best.data.params["optimizer.lr"] == "1.0"
    (parent,) = [r for r in client.search_runs([experiment])
                 if r.data.tags.get("numgrad.kind") == "sweep"]  # fmt: skip
    pid = parent.info.run_id
    assert lines[end + 1] == (
        f"numgrad: parent run {pid} ({parent.info.run_name}) on {workdir.uri}; page: "
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{pid}?workflowType=machine_learning"
    )
    # How to serve the pages, while no UI answers on numgrad-ui's port.
    hint = "numgrad: no MLflow UI answers on http://127.0.0.1:5000; serve the store with: "
    hint += "numgrad-ui"  # the store numgrad-ui serves by default where the sweep started
    assert lines[end + 2 : -1] == ([] if answers("http://127.0.0.1:5000/health") else [hint])
    assert lines[-1] == f"numgrad: summary {workdir.path / 'multirun' / 'sweep_summary.csv'}"
    assert all(JOB_LINE.match(x) for x in lines[1:end])  # nothing else between them


@pytest.mark.slow
def test_a_pool_workers_job_is_printed_when_it_ends_not_when_the_sweep_does(workdir):
    # Job 0 takes 5 steps, job 1 runs until Ctrl-C: job 0's line comes while job 1 runs.
    proc = workdir.popen("optimizer.steps=5,100000000", "tracking.enabled=false", *JOBLIB,
                         multirun=True)  # fmt: skip
    with running(proc):
        seen, deadline = "", time.monotonic() + 120
        while "job 0 " not in seen and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen += proc.stdout.readline()
        assert "job 0 " in seen, seen
        assert proc.poll() is None and not (workdir.path / "multirun/1/numgrad_job.json").exists()
        wait_for(lambda: (workdir.path / "multirun/1/.hydra/overrides.yaml").exists())  # started
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    jobs = job_lines(seen + out)
    assert jobs[0][5] == "FINISHED" and jobs[1][5] == "KILLED"  # the end gives the killed one


@pytest.mark.slow
@pytest.mark.parametrize("size", [(40, 160), (0, 0)], ids=["sized", "size-unknown"])
def test_on_a_terminal_a_bar_counts_the_jobs_up_to_the_total(workdir, size):
    # (0, 0): a terminal that does not know its size, as under `script` or in some CIs
    import fcntl
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))  # rows, cols
    env = {k: v for k, v in numgrad_env().items() if k != "CI"}
    import subprocess

    proc = subprocess.Popen(
        workdir.argv("optimizer.lr=0.1,0.5,1e308", "data=blobs", "optimizer.steps=5",
                     "tracking.enabled=false", multirun=True),
        cwd=workdir.path, env=env, stdin=follower, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    screen = b""
    with running(proc):
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            screen += chunk
        proc.wait(timeout=120)
    os.close(leader)
    text = screen.decode()
    assert proc.returncode == 1, text
    frames = [f for f in re.split(r"[\r\n]+", text) if f.startswith("sweep:")]
    assert re.search(r"\| 0/3 \[", frames[0]), frames
    ended = r"sweep: 100%.*\| 3/3 \[\d\d:\d\d<\d\d:\d\d, .*, 1 failed\]"  # elapsed<left
    assert re.search(ended, frames[-1]), frames
    lines = text.replace("\r\n", "\n").split("\n")
    assert sorted(int(m[3]) for m in map(JOB_LINE.search, lines) if m) == [0, 1, 2]
    assert "W_final" not in text
    assert "numgrad: sweep FAILED: 1 of 3 jobs did not finish (2 FINISHED, 1 FAILED)" in text
