"""What the dataset input and the logged model add to a run, timed in-process.

Each sample is a fresh Python process that imports numgrad and mlflow, opens an existing
SQLite store and makes ``--runs`` short tracked runs one after another through numgrad's
sink (as a basic sweep's jobs do: one process, many runs): first with
``tracking.log_model=true``, then, in another fresh process, with ``false``. It times
each run whole, and the two sends this adds: the dataset input
(``MlflowStore.log_dataset``) and the model (``numgrad.tracking.model.send_model``).
The first model in a process pays the import of ``mlflow.pyfunc`` and MLflow's scan of
the installed packages (it checks the pinned requirements against them).

Usage: ``python benchmarks/bench_model.py [--repeats 3] [--runs 6]``; prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine  # benchmarks/ is on sys.path when run as a script


def child(store: str, runs: int, log_model: bool, folder: Path) -> dict[str, list[float]]:
    """``runs`` tracked runs in this process; milliseconds per run of each measure."""
    import numpy as np
    from omegaconf import OmegaConf

    from numgrad.config import TrackingConfig
    from numgrad.data import blobs
    from numgrad.descent import Descent
    from numgrad.gradient import vectorized_gradient
    from numgrad.tracking import batches
    from numgrad.tracking.mlflow_store import MlflowStore
    from numgrad.tracking.sink import open_sink

    out: dict[str, list[float]] = {"run": [], "dataset": [], "model": []}

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                out[key].append((time.perf_counter() - start) * 1000)

        return wrapper

    batches.send_model = timed("model", batches.send_model)
    MlflowStore.log_dataset = timed("dataset", MlflowStore.log_dataset)
    data = OmegaConf.structured(blobs.Schema)
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(60, 4)), np.arange(60) % 3
    for i in range(runs):
        start = time.perf_counter()
        settings = TrackingConfig(uri=store, log_model=log_model)
        sink = open_sink(settings, config={"seed": i}, overrides=[f"seed={i}"],
                         output_dir=folder / f"run{i}", planned_steps=10)  # fmt: skip
        descent = Descent(rng.normal(size=(4, 3)), x, t, vectorized_gradient, h=1e-4, lr=0.5,
                          steps=10)  # fmt: skip
        with sink:
            sink.log_start(descent.W.copy())
            sink.log_data(descent.x, descent.labels, data, seed=i)
            for record in descent:
                sink.log_step(record)
            sink.log_end(descent)
        out["run"].append((time.perf_counter() - start) * 1000)
    return out


def sample(store: str, runs: int, log_model: bool, folder: Path) -> dict[str, list[float]]:
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from bench_model import child; "
        "from pathlib import Path; "
        "print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1', "
        "Path(sys.argv[5]))))"
    )
    argv = [sys.executable, "-c", code, str(Path(__file__).parent), store, str(runs),
            "1" if log_model else "0", str(folder)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--runs", type=int, default=6, help="runs per process")
    args = parser.parse_args()
    samples: dict[bool, list[dict[str, list[float]]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        sample(store, 1, True, Path(tmp) / "warm")  # an existing store, warm caches
        for i in range(args.repeats):  # interleaved: drift hits both alike
            for log_model in (True, False):
                samples[log_model].append(sample(store, args.runs, log_model, Path(tmp) / f"{i}"))

    def median(log_model: bool, key: str, which: slice) -> float:
        values = [v for s in samples[log_model] for v in s[key][which]]
        return statistics.median(values) if values else float("nan")

    print(f"{args.runs} short runs per fresh process (blobs 60×4, 4×3 net, 10 steps), existing "
          f"SQLite store; medians over {args.repeats} processes, in ms\n")  # fmt: skip
    print(machine() + "\n")
    print("| measure | first run in the process | later runs |")
    print("|---|---:|---:|")
    first, later = slice(0, 1), slice(1, None)
    for label, log_model, key in (
        ("dataset input (log_dataset)", True, "dataset"),
        ("logged model (send_model)", True, "model"),
        ("whole run, `log_model=true`", True, "run"),
        ("whole run, `log_model=false`", False, "run"),
    ):
        print(f"| {label} | {median(log_model, key, first):.0f} "
              f"| {median(log_model, key, later):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
