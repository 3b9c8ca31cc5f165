"""Time a 16-job sweep with Hydra's basic launcher and with joblib (2 workers).

Run: ``python benchmarks/bench_sweep.py`` (about 12 minutes on 2 cores; ``--repeats 1``
for a quick look).

Each sample is the wall time of one whole ``numgrad -m`` process (start-up, the
sweep's parent run, 16 jobs, the summary) on a fresh embedded SQLite store in a
temporary directory; the table shows the median of ``--repeats`` samples, taken in turns. Every job
computes for a few seconds (the book's loop gradient on a 20x10 net, 200 samples,
``--steps`` steps), so the launchers' own overhead is small next to the work. After
every sample the store is read back with ``MlflowClient``: one FINISHED parent and 16
FINISHED children with complete histories, or the script stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from _machine import machine  # benchmarks/ is on sys.path when run as a script

GRID = ("optimizer.lr=0.05,0.1,0.2,0.4", "gradient.h=1e-3,1e-4,1e-5,1e-6")  # 16 jobs
JOB = ("gradient.method=loop", "data=blobs", "net.shape=[20,10]", "data.n_samples=200")
LAUNCHERS = {
    "basic (sequential)": (),
    "joblib, 2 workers": ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
}
JOBS = 16


def sweep_seconds(launcher: tuple[str, ...], steps: int) -> float:
    """Wall time of one ``numgrad -m`` process; checks the store afterwards."""
    numgrad = shutil.which("numgrad") or "numgrad"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        argv = [
            numgrad, "-m", *GRID, *JOB, f"optimizer.steps={steps}", *launcher,
            f"hydra.sweep.dir={tmp}/multirun",
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"numgrad exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        check_store(f"sqlite:///{tmp}/outputs/mlflow.db", steps)
    return seconds


def check_store(uri: str, steps: int) -> None:
    """One FINISHED parent, 16 FINISHED children, each with every step's loss."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("numgrad")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("numgrad.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    problems = []
    if len(parents) != 1 or parents[0].info.status != "FINISHED":
        problems.append(f"parents: {[(p.info.run_name, p.info.status) for p in parents]}")
    if len(children) != JOBS or {c.info.status for c in children} != {"FINISHED"}:
        problems.append(f"children: {sorted((c.info.run_name, c.info.status) for c in children)}")
    for child in children:
        history = client.get_metric_history(child.info.run_id, "loss")
        if sorted(m.step for m in history) != list(range(steps + 1)):
            problems.append(f"{child.info.run_name}: {len(history)} loss values, not {steps + 1}")
    if problems:
        sys.exit("incomplete sweep in " + uri + ":\n" + "\n".join(problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="samples per launcher (median)")
    parser.add_argument("--steps", type=int, default=450, help="descent steps per job")
    args = parser.parse_args()

    print(machine())
    print(
        f"{JOBS} jobs ({' '.join(GRID)}), each: {' '.join(JOB)} optimizer.steps={args.steps}; "
        f"whole-process wall time, median of {args.repeats}, fresh SQLite store each time"
    )
    print()
    samples: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits both launchers alike
        for name, launcher in LAUNCHERS.items():
            samples[name].append(sweep_seconds(launcher, args.steps))
    medians = {name: statistics.median(times) for name, times in samples.items()}
    base = medians["basic (sequential)"]
    print("| launcher | median wall time (s) | samples (s) | speed-up vs basic |")
    print("|---|---:|---|---:|")
    for name, median in medians.items():
        shown = ", ".join(f"{s:.1f}" for s in samples[name])
        print(f"| {name} | {median:.1f} | {shown} | {base / median:.2f}x |")
    print()
    print(f"All {JOBS} children FINISHED with complete histories in every sample.")


if __name__ == "__main__":
    main()
