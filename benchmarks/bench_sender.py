"""Does a sweep's sender keep up with its jobs? Runs uploaded per second, and the lag
from a job's end to its run being FINISHED in the store.

The journals are real: ``--writers`` processes each run numgrad's runner in-process, one
10-step job after another (as a joblib worker does), in journal-only mode (a local
sweep's job: ``NUMGRAD_SWEEP_SENDER`` set), under a sweep parent's journal. Every
record a sweep's job writes is there: params, the dataset input, per-step metrics,
the artifacts (history.csv, config, W, figures), the model, the end. Each variant has a
fresh SQLite store (its tables made beforehand) and fresh journals:

- sender, backlog, K uploaders: every journal already ended; the real sender path
  (``Sender.send_all`` → ``Uploader.upload``) in this process, with ``K - 1`` upload
  processes beside it (``--uploaders``, each K its own variant), timed from an opened
  store (and started upload processes: a sweep starts them while its first jobs run)
  until every child is FINISHED and closed: runs per second;
- numgrad-sync, backlog: the same journals through one ``numgrad-sync`` pass
  (``Syncer.sync``, the same uploader), timed the same way;
- sender, live, K uploaders: the sender process a sweep starts (``python -m
  numgrad.sweep.sender_process --uploaders K``, its stdin/stdout protocol) follows
  the sweep dir while the writers write; a thread here reads the store's ``runs``
  table every 20 ms. Lag: the moment a run is seen FINISHED less its end record's
  ``end_time``.

After every variant the store is read back with ``MlflowClient``: each child FINISHED
under the parent, its whole loss history as its journal holds it, history.csv and
W_final among its artifacts, one logged model each; otherwise the script stops.

Target (issue 22): the backlog sender at least 30 finished 10-step journals a second
on 2 cores. ``--profile`` prints cProfile's top entries of the backlog sender (K=1).
Usage: ``python benchmarks/bench_sender.py [--jobs 48] [--writers 2] [--repeats 3]
[--uploaders 1,2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is on sys.path when run as a script

TARGET = 30.0  # runs a second, backlog sender (issue 22)
STEPS = 10
EXPERIMENT = "numgrad"


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def load() -> str:
    """The machine's load now (it is shared): uptime's three figures."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- the journals


def write_jobs(sweep: Path, uri: str, numbers: list[int]) -> None:
    """A writer process: run the jobs ``numbers`` one after another, journal only."""
    from hydra import compose, initialize_config_dir

    from numgrad.cli import CONFIG_DIR
    from numgrad.config import register_configs
    from numgrad.runner import execute

    register_configs()
    for n in numbers:
        overrides = [f"optimizer.lr={0.05 * (n + 1):.2f}", f"optimizer.steps={STEPS}"]
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="numgrad"):
            cfg = compose(config_name="config", overrides=overrides)
        with contextlib.redirect_stdout(io.StringIO()):  # the run's summary
            execute(cfg, output_dir=sweep / str(n), overrides=overrides)


def new_sweep(root: Path, name: str) -> tuple[Path, str]:
    """A sweep dir with its parent's journal started, and an empty store: (dir, uri)."""
    from numgrad.tracking.provenance import base_tags
    from numgrad.tracking.recorder import Recorder

    trial = root / name
    shutil.rmtree(trial, ignore_errors=True)
    (trial / "multirun").mkdir(parents=True)
    shutil.copyfile(root / "empty.db", trial / "mlflow.db")
    uri = f"sqlite:///{trial / 'mlflow.db'}"
    parent = Recorder(trial / "multirun", uri=uri, experiment=EXPERIMENT,
                      run_name="sweep", handed_over=True)  # fmt: skip
    parent.start(kind="sweep", tags={**base_tags(), "numgrad.kind": "sweep"})
    parent.journal.close()  # the sweep goes on; its end comes when the jobs are done
    return trial / "multirun", uri


def writers(sweep: Path, uri: str, jobs: int, count: int) -> list[subprocess.Popen]:
    """Start ``count`` writer processes sharing ``jobs`` jobs, as a sweep's jobs would run."""
    from numgrad.tracking.journal import JOURNAL_FILE
    from numgrad.tracking.provenance import PARENT_JOURNAL_ENV, SENDER_ENV

    extra = {SENDER_ENV: uri, PARENT_JOURNAL_ENV: str(sweep / JOURNAL_FILE)}
    shares = [",".join(str(n) for n in range(w, jobs, count)) for w in range(count)]
    argv = [sys.executable, __file__, "--write", str(sweep), uri]
    return [subprocess.Popen([*argv, share], env={**env(), **extra}) for share in shares]


def wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.wait() != 0:
            sys.exit(f"a writer exited {proc.returncode}")


def end_parent(sweep: Path) -> None:
    """The sweep's end: its parent's journal ends (what the sweep itself appends)."""
    from numgrad.tracking.journal import JOURNAL_FILE, Journal

    journal, _ = Journal.reopen(sweep / JOURNAL_FILE)
    journal.append("end", status="FINISHED", end_time=int(time.time() * 1000))
    journal.close()


def written(root: Path, name: str, jobs: int, count: int) -> tuple[Path, str, float]:
    """Fresh journals, all ended, the sweep's too: (sweep dir, uri, the writers' seconds)."""
    sweep, uri = new_sweep(root, name)
    start = time.perf_counter()
    wait(writers(sweep, uri, jobs, count))
    seconds = time.perf_counter() - start
    end_parent(sweep)
    os.sync()  # the writers' files on disk: their write-back is not the upload's to pay
    return sweep, uri, seconds


# -------------------------------------------------------------------- uploads


def sender_backlog(
    sweep: Path, uri: str, jobs: int, profile: cProfile.Profile | None, uploaders: int = 1
) -> float:
    """Seconds the sender with ``uploaders`` takes over ``jobs`` ended journals, its
    store open and its upload processes started."""
    from numgrad.tracking.mlflow_store import MlflowStore
    from numgrad.tracking.sender import Sender

    sender = Sender(sweep, uri, uploaders=uploaders)
    sender.store = MlflowStore(uri).open()
    if sender.pool is not None:
        sender.pool.started()
    start = time.perf_counter()
    if profile is not None:
        profile.enable()
    followed = lambda: [sender.parent, *sender.children.values()]  # noqa: E731
    while not (len(sender.children) == jobs and all(t.closed for t in followed())):
        if not sender.send_all() or sender.error:
            sys.exit(f"the sender failed: {sender.error}")
        if not sender.busy:
            time.sleep(0.005)  # the upload processes work: no spinning beside them
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - start
    sender.close()
    return seconds


def sync_backlog(sweep: Path, uri: str) -> float:
    """Seconds one numgrad-sync pass takes over the sweep dir, its store open."""
    from numgrad.tracking.mlflow_store import MlflowStore
    from numgrad.tracking.sync import Syncer

    syncer = Syncer(uri)
    syncer.stores[uri] = MlflowStore(uri).open()
    start = time.perf_counter()
    results = syncer.sync([sweep])
    seconds = time.perf_counter() - start
    bad = [r.line for r in results if r.state != "uploaded"]
    if bad:
        sys.exit("numgrad-sync did not upload:\n" + "\n".join(bad))
    return seconds


def finished_at(db: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """Note the wall time (ms) at which each run is first seen FINISHED; once more after
    ``stop`` (a run FINISHED just before it, between two looks, is seen then)."""
    last, failed = False, 0
    while not last:
        last = stop.is_set()
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                now = time.time() * 1000
                for (run_id,) in con.execute("select run_uuid from runs where status='FINISHED'"):
                    seen.setdefault(run_id, now)
        except sqlite3.OperationalError:  # no tables yet, or busy: a last look is retried
            failed += last
            last = last and failed >= 50
        time.sleep(0.02)


def sender_live(
    root: Path, name: str, jobs: int, count: int, uploaders: int
) -> tuple[Path, str, float, list[float]]:
    """The sender process following writers: (dir, uri, seconds to the last FINISHED
    child from the writers' start, each child's lag in seconds)."""
    from numgrad.tracking.journal import read_journal

    sweep, uri = new_sweep(root, name)
    sender = subprocess.Popen(
        [sys.executable, "-m", "numgrad.sweep.sender_process", str(sweep), uri, "--grace", "30",
         "--uploaders", str(uploaders)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    said = json.loads(sender.stdout.readline())
    if said.get("event") != "parent":
        sys.exit(f"the sender said {said}")
    seen: dict[str, float] = {}
    stop = threading.Event()
    poller = threading.Thread(target=finished_at, args=(sweep.parent / "mlflow.db", seen, stop))
    poller.start()
    start = time.time()
    wait(writers(sweep, uri, jobs, count))
    sender.stdin.write("drain\n")
    sender.stdin.flush()
    state = json.loads(sender.stdout.readline())
    stop.set()
    poller.join()
    end_parent(sweep)
    sender.communicate("finish\n", timeout=120)
    lags = []
    for path, child in state["children"].items():
        end = read_journal(Path(path)).end
        if child["run_id"] not in seen:
            sys.exit(f"{path}: its run was never seen FINISHED")
        lags.append((seen[child["run_id"]] - end["end_time"]) / 1000)
    last = max(seen[c["run_id"]] for c in state["children"].values()) / 1000
    return sweep, uri, last - start, lags


# ------------------------------------------------------------------ the check


def check_store(sweep: Path, uri: str, jobs: int) -> None:
    """Every child FINISHED under the parent with its journal's loss history, its
    artifacts and its logged model; else stop."""
    from mlflow.tracking import MlflowClient

    from numgrad.tracking.journal import JOURNAL_FILE, read_journal

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    children = {r.info.run_id: r for r in runs if r is not parent}
    models = client.search_logged_models(experiment_ids=[exp.experiment_id], max_results=1000)
    problems = [] if len(models) == jobs else [f"{len(models)} logged models, not {jobs}"]
    for n in range(jobs):
        reader = read_journal(sweep / str(n) / JOURNAL_FILE)
        run = children.get(reader.runs.get(uri))
        if run is None:
            problems.append(f"job {n}: no run")
            continue
        expected = [(m[3], m[1]) for e in reader.entries if e["kind"] == "metrics"
                    for m in e["metrics"] if m[0] == "loss"]  # fmt: skip
        history = client.get_metric_history(run.info.run_id, "loss")
        stored = sorted((m.step, m.value) for m in history)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
        files |= {a.path for a in client.list_artifacts(run.info.run_id)}
        if run.info.status != "FINISHED":
            problems.append(f"job {n}: {run.info.status}")
        if run.data.tags.get("mlflow.parentRunId") != parent.info.run_id:
            problems.append(f"job {n}: not under the parent")
        if stored != sorted(expected) or len(expected) != STEPS + 1:
            problems.append(f"job {n}: {len(stored)} loss values, the journal has {len(expected)}")
        if not {"history.csv", "weights/W_final.npy"} <= files:
            problems.append(f"job {n}: artifacts {sorted(files)}")
    if len(children) != jobs:
        problems.append(f"{len(children)} children, not {jobs}")
    if problems:
        sys.exit(f"incomplete upload in {uri}:\n" + "\n".join(problems))


# ----------------------------------------------------------------------- main


def print_profile(profile: cProfile.Profile, top: int) -> None:
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        print(f"\ncProfile of the backlog sender, by {order}:\n")
        print(out.getvalue().split("\n\n", 2)[-1].rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=48, help="journals per variant")
    parser.add_argument("--writers", type=int, default=2, help="concurrent writer processes")
    parser.add_argument("--repeats", type=int, default=3, help="trials per variant (median)")
    parser.add_argument(
        "--uploaders",
        default="1,2",
        help="sender variants: processes uploading children (K), comma-separated",
    )
    parser.add_argument("--profile", action="store_true",
                        help="then cProfile one more backlog sender (untimed)")  # fmt: skip
    parser.add_argument("--write", nargs=3, help=argparse.SUPPRESS)  # a writer process
    args = parser.parse_args()
    if args.write:
        sweep, uri, numbers = args.write
        write_jobs(Path(sweep), uri, [int(n) for n in numbers.split(",") if n])
        return
    print(machine())
    print(f"Before: {load()}")
    jobs, count = args.jobs, args.writers
    ks = [int(k) for k in args.uploaders.split(",")]
    rows: dict[str, list[float]] = {"write": [], "sync": []}
    rows |= {f"{kind} K={k}": [] for kind in ("sender", "live") for k in ks}
    lags: dict[str, list[float]] = {f"live K={k}": [] for k in ks}
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-sender-") as tmp:
        root = Path(tmp)
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{root / 'empty.db'}").search_experiments()  # tables, once
        # Untimed: the first model in a process pays for imports (~0.5 s), once a sweep.
        sender_backlog(*written(root, "warm-up", 2, 1)[:2], 2, None)
        # Interleaved: a slow spell hits every variant. A new store name each time: MLflow
        # keeps one engine per URI in a process, which a file made anew would confuse.
        for r in range(args.repeats):
            sweep, uri, seconds = written(root, f"sender-{r}", jobs, count)
            rows["write"].append(seconds)
            sweep, uri, _ = written(root, f"sync-{r}", jobs, count)
            rows["sync"].append(sync_backlog(sweep, uri))
            check_store(sweep, uri, jobs)
            for k in ks:
                sweep, uri, _ = written(root, f"sender-{r}-{k}", jobs, count)
                rows[f"sender K={k}"].append(sender_backlog(sweep, uri, jobs, None, k))
                check_store(sweep, uri, jobs)
                sweep, uri, seconds, trial_lags = sender_live(root, f"live-{r}-{k}", jobs, count, k)
                rows[f"live K={k}"].append(seconds)
                lags[f"live K={k}"] += trial_lags
                check_store(sweep, uri, jobs)
        if profile is not None:  # apart: cProfile slows what it watches
            sender_backlog(*written(root, "profiled", jobs, count)[:2], jobs, profile)
    print(f"After: {load()}")
    report(rows, lags, jobs, count, args.repeats)
    if profile is not None:
        print_profile(profile, 25)


def report(rows: dict[str, list[float]], lags: dict[str, list[float]], jobs: int, count: int,
           repeats: int) -> None:  # fmt: skip
    median = {name: statistics.median(values) for name, values in rows.items()}
    pace = {name: jobs / seconds for name, seconds in median.items()}
    print(f"\n{jobs} finished {STEPS}-step journals ({count} writer processes), fresh SQLite "
          f"store each; median of {repeats} (target: sender ≥ {TARGET:g} runs/s)\n")  # fmt: skip
    print("| variant | seconds | runs/s | vs numgrad-sync | lag median (s) | lag max (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"write": f"{count} writers alone (the jobs' pace)", "sync": "numgrad-sync, backlog"}
    for name in rows:
        kind, _, k = name.partition(" ")
        if k:
            names[name] = (f"sender, backlog, {k}" if kind == "sender"
                           else f"sender, live beside the writers, {k}")  # fmt: skip
    for name, label in names.items():
        lag = (f"{statistics.median(lags[name]):.2f} | {max(lags[name]):.2f}" if name in lags
               else "— | —")  # fmt: skip
        ratio = f"{pace[name] / pace['sync']:.2f}x" if name.startswith(("sender", "sync")) else "—"
        print(f"| {label} | {median[name]:.2f} | {pace[name]:.1f} | {ratio} | {lag} |")
    backlog = {name: pace[name] for name in rows if name.startswith("sender")}
    best = max(backlog, key=backlog.get)
    if "sender K=1" in backlog:
        for name in backlog:
            print(f"{name} / sender K=1: {backlog[name] / backlog['sender K=1']:.2f}x")
    met = "met" if backlog[best] >= TARGET else "NOT met"
    print(
        f"\nSender backlog, best ({best}): {backlog[best]:.1f} runs/s ({met}); every run complete."
    )


if __name__ == "__main__":
    main()
