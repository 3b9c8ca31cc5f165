"""What an interrupted ``numgrad-sync`` costs: resumed from its acknowledgement, against one
uninterrupted sync of the same 100,000-value journal.

A real offline run (``optimizer.steps=20000``, ``tracking.max_points`` high: 5 metrics
a step) makes the journal once. Each trial copies it and a fresh empty store, then
times whole ``numgrad-sync`` processes:

- uninterrupted: one sync, start to exit;
- interrupted at p%: a sync stopped with SIGINT once the store holds p% of the points,
  then a second sync that finishes it; the total is both processes' wall time.

Target: interrupted + resumed at most 2.0× the uninterrupted sync (issue 18; re-sending
what the store already holds used to cost ~5.7 s per 1,000 points).

Usage: ``python benchmarks/bench_sync.py [--repeats 3] [--steps 20000]``; prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine, script  # benchmarks/ is on sys.path when run as a script

TARGET = 2.0
FRACTIONS = (0.25, 0.5, 0.75)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def points(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute("select count(*) from metrics").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return 0


def make_journal(root: Path, steps: int) -> tuple[Path, int]:
    """A finished offline run of ``steps`` steps and every point kept: (run dir, points)."""
    run = root / "template"
    subprocess.run(
        [*script("numgrad"), f"hydra.run.dir={run}", "tracking.offline=true",
         f"optimizer.steps={steps}", f"tracking.max_points={steps + 1}"],
        cwd=root, env=env(), check=True, capture_output=True,
    )  # fmt: skip
    empty = root / "empty.db"
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{empty}").search_experiments()  # tables made once (~2.5 s)
    trial = fresh(root, run, "count")
    sync_once(trial)
    return run, points(trial / "mlflow.db")


def fresh(root: Path, template: Path, name: str) -> Path:
    trial = root / name
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(template, trial / "run")
    shutil.copyfile(root / "empty.db", trial / "mlflow.db")
    return trial


def sync_argv(trial: Path) -> list[str]:
    return [
        *script("numgrad-sync"),
        "--uri",
        f"sqlite:///{trial / 'mlflow.db'}",
        str(trial / "run"),
    ]


def sync_once(trial: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(sync_argv(trial), cwd=trial, env=env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"numgrad-sync failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def interrupted(trial: Path, at: int) -> float:
    """Seconds of a sync stopped once the store holds ``at`` points, plus its resume."""
    start = time.perf_counter()
    proc = subprocess.Popen(sync_argv(trial), cwd=trial, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    while proc.poll() is None and points(trial / "mlflow.db") < at:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.communicate()
    first = time.perf_counter() - start
    if proc.returncode != 130:
        sys.exit(f"the interrupted sync exited {proc.returncode}, not 130: interrupt it sooner")
    return first + sync_once(trial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="trials per variant (median)")
    parser.add_argument("--steps", type=int, default=20000, help="steps of the run (5 points each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        root = Path(tmp)
        template, total = make_journal(root, args.steps)
        times: dict[str, list[float]] = {"uninterrupted": []}
        for _ in range(args.repeats):  # interleaved: a slow spell hits every variant
            times["uninterrupted"].append(sync_once(fresh(root, template, "trial")))
            for fraction in FRACTIONS:
                name = f"interrupted at {fraction:.0%}, then resumed"
                at = int(total * fraction)
                times.setdefault(name, []).append(interrupted(fresh(root, template, "trial"), at))
    base = statistics.median(times["uninterrupted"])
    print(machine())
    print(f"\nnumgrad-sync of one journal of {total:,} metric values "
          f"(median of {args.repeats}; target: resumed ≤ {TARGET}× uninterrupted)\n")  # fmt: skip
    print("| variant | seconds | ratio | target met |")
    print("|---|---:|---:|---|")
    for name, values in times.items():
        median = statistics.median(values)
        ok = "—" if name == "uninterrupted" else ("yes" if median / base <= TARGET else "NO")
        print(f"| {name} | {median:.1f} | {median / base:.2f} | {ok} |")


if __name__ == "__main__":
    main()
