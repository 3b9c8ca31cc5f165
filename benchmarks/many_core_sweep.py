"""Sweeps on a many-core machine: joblib workers, tracked against untracked, the sender
under load. One prepared script to carry to a machine with 16 cores or more.

Each variant is one whole ``numgrad -m`` process (its wall time), in one scratch
directory with one SQLite store (made first, as a user's existing store):

- one long job alone, untracked (what 64 of them cost one after another);
- long jobs (the book's loop gradient on a 20x10 net, 200 samples, 100 steps):
  8 in a basic sweep, untracked; 64 (8 learning rates x 8 steps h) with 16 joblib
  workers untracked, then tracked with 16, 8 and 4 workers;
- short jobs (10 steps of the default net): 64 with 16 workers, untracked and tracked.

After every tracked variant the store is read back: the sweep's parent and each child
FINISHED, each child with its whole loss history (steps + 1 points); otherwise the
script stops. Issue 22's targets on 16 cores: short tracked ≤ 1.3x untracked, long
tracked ≤ 1.1x.

Usage: ``python benchmarks/many_core_sweep.py [--workers 16] [--quick]``; ``--quick``
runs 4 jobs of each kind with 2 workers, to try it on a small machine first. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine, script  # benchmarks/ is on sys.path when run as a script

LONG = ("gradient.method=loop", "data=blobs", "net.shape=[20,10]", "data.n_samples=200")
GRID = ("optimizer.lr=" + ",".join(f"{0.05 * (i + 1):.2f}" for i in range(8)),
        "gradient.h=" + ",".join(f"1e-{k}" for k in range(2, 10)))  # fmt: skip
QUICK_GRID = ("optimizer.lr=0.1,0.2", "gradient.h=1e-3,1e-4")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def seconds(work: Path, args: list[str]) -> float:
    """Wall time of one ``numgrad`` process in ``work``; stop if it fails."""
    start = time.perf_counter()
    proc = subprocess.run([*script("numgrad"), *args], cwd=work, env=env(),
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"numgrad {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return took


def check_store(work: Path, sweep_dir: Path, jobs: int, steps: int) -> str:
    """The sweep's parent and its ``jobs`` children FINISHED, each with steps + 1 losses."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work}/outputs/mlflow.db")
    exp = client.get_experiment_by_name("numgrad")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("numgrad.sweep.dir") == str(sweep_dir)]
    if len(parents) != 1 or parents[0].info.status != "FINISHED":
        sys.exit(f"{sweep_dir}: parent runs {[p.info.status for p in parents]}")
    parent = parents[0].info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    problems = [] if len(children) == jobs else [f"{len(children)} children, not {jobs}"]
    for child in children:
        points = len(client.get_metric_history(child.info.run_id, "loss"))
        if child.info.status != "FINISHED" or points != steps + 1:
            problems.append(f"{child.info.run_name}: {child.info.status}, {points} losses")
    if problems:
        sys.exit(f"{sweep_dir}: incomplete:\n" + "\n".join(problems))
    return f"parent and {jobs} children FINISHED, {steps + 1} losses each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=16, help="joblib workers")
    parser.add_argument("--quick", action="store_true", help="4 jobs a sweep, 2 workers")
    args = parser.parse_args()
    grid, workers, long_steps = (QUICK_GRID, 2, 5) if args.quick else (GRID, args.workers, 100)
    jobs = 4 if args.quick else 64
    long_job = [*LONG, f"optimizer.steps={long_steps}"]
    short_job = ["optimizer.steps=10"]
    rows: list[tuple[str, str, str, float, str]] = []
    print(machine(), f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="many-core-") as tmp:
        work = Path(tmp)
        seconds(work, ["optimizer.steps=0", f"hydra.run.dir={work}/first"])  # the store

        def sweep(name: str, job: list[str], n_jobs: int, tracked: bool, steps: int) -> None:
            sweep_dir = work / name
            argv = ["-m", *job, *grid, f"hydra.sweep.dir={sweep_dir}"]
            if n_jobs:
                argv += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
            argv += [] if tracked else ["tracking.enabled=false"]
            took = seconds(work, argv)
            check = check_store(work, sweep_dir, jobs, steps) if tracked else ""
            rows.append((name, str(n_jobs or "basic"), "on" if tracked else "off", took, check))
            print(rows[-1], flush=True)

        one = seconds(work, [*long_job, "tracking.enabled=false", f"hydra.run.dir={work}/one"])
        rows.append(("one long job alone", "-", "off", one, ""))
        basic_grid = (grid[0], "gradient.h=1e-4")  # 8 jobs (2 with --quick)
        took = seconds(work, ["-m", *long_job, *basic_grid, "tracking.enabled=false",
                              f"hydra.sweep.dir={work}/long-basic"])  # fmt: skip
        count = len(grid[0].split(","))
        rows.append((f"long, basic launcher, {count} jobs", "basic", "off", took, ""))
        sweep("long-off", long_job, workers, False, long_steps)
        for n in sorted({workers, max(workers // 2, 1), max(workers // 4, 1)}, reverse=True):
            sweep(f"long-on-{n}", long_job, n, True, long_steps)
        sweep("short-off", short_job, workers, False, 10)
        sweep("short-on", short_job, workers, True, 10)
    print(f"\n{jobs} jobs a sweep; {os.cpu_count()} logical CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at the end\n")  # fmt: skip
    print("| variant | workers | tracking | wall s | store check |")
    print("|---|---|---|---:|---|")
    for name, n, tracked, took, check in rows:
        print(f"| {name} | {n} | {tracked} | {took:.1f} | {check} |")
    base = {r[0]: r[3] for r in rows}
    long_ratio = base[f"long-on-{workers}"] / base["long-off"]
    short_ratio = base["short-on"] / base["short-off"]
    print(f"\ntracked / untracked with {workers} workers: long {long_ratio:.2f}x "
          f"(target ≤ 1.1x), short {short_ratio:.2f}x (target ≤ 1.3x)")  # fmt: skip


if __name__ == "__main__":
    main()
