"""What MLflow tracking costs a ``numgrad`` run, measured on whole processes.

Runs the installed ``numgrad`` (default 2×3 problem) from a scratch directory whose
embedded store already exists, tracking on and off, and ``python -c "import mlflow"``
as the floor; every variant ``--repeats`` times, interleaved, and takes medians.

- per-step cost: the slope of wall time between ``optimizer.steps=2000`` and
  ``20000``, tracking on versus off (target: ratio at most 1.25);
- fixed cost: ``optimizer.steps=0`` with tracking on versus the floor (target: at
  most 2.0×).

Usage: ``python benchmarks/bench_tracking.py [--repeats 7]``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine, script  # benchmarks/ is on sys.path when run as a script

SLOPE_TARGET, FIXED_TARGET = 1.25, 2.0


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per variant (median)")
    parser.add_argument("--small", type=int, default=2000, help="steps of the short run")
    parser.add_argument("--large", type=int, default=20000, help="steps of the long run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an override for every numgrad variant, e.g. tracking.log_model=false",
    )  # fmt: skip
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    numgrad = script("numgrad")
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        work = Path(tmp)

        def run(*overrides: str) -> list[str]:
            return [*numgrad, f"hydra.run.dir={work}/run", *args.set, *overrides]

        variants = {
            "floor": [sys.executable, "-c", "import mlflow"],
            "on 0": run("optimizer.steps=0"),
            f"on {args.small}": run(f"optimizer.steps={args.small}"),
            f"on {args.large}": run(f"optimizer.steps={args.large}"),
            "off 0": run("optimizer.steps=0", "tracking.enabled=false"),
            f"off {args.small}": run(f"optimizer.steps={args.small}", "tracking.enabled=false"),
            f"off {args.large}": run(f"optimizer.steps={args.large}", "tracking.enabled=false"),
        }
        # An existing store (creating one costs more, once) and warm file caches.
        for argv in variants.values():
            timed(argv, work, env)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, argv in variants.items():  # interleaved: drift hits all alike
                times[name].append(timed(argv, work, env))
        runs = sum(name.startswith("on") for name in times) * (args.repeats + 1)
        store_mb = (work / "outputs" / "mlflow.db").stat().st_size / 1e6

    med = {name: statistics.median(values) for name, values in times.items()}
    span = args.large - args.small
    slope_on = (med[f"on {args.large}"] - med[f"on {args.small}"]) / span * 1e6
    slope_off = (med[f"off {args.large}"] - med[f"off {args.small}"]) / span * 1e6
    slope_ratio, fixed_ratio = slope_on / slope_off, med["on 0"] / med["floor"]

    def verdict(ratio: float, target: float) -> str:
        return "yes" if ratio <= target else "**no**"

    print(
        f"numgrad tracking benchmark: median of {args.repeats} whole-process runs per variant, "
        f"existing SQLite store ({store_mb:.1f} MB after {runs} tracked runs), "
        f"{os.cpu_count()} CPUs"
    )
    print(machine() + (f"; overrides: {' '.join(args.set)}" if args.set else "") + "\n")
    print("| measure | tracking on | baseline | ratio | target | met |")
    print("|---|---:|---:|---:|---:|:---:|")
    print(
        f"| per-step cost, slope {args.small}→{args.large} steps (µs/step) vs tracking off "
        f"| {slope_on:.1f} | {slope_off:.1f} | {slope_ratio:.2f} | ≤ {SLOPE_TARGET} "
        f"| {verdict(slope_ratio, SLOPE_TARGET)} |"
    )
    print(
        f'| fixed cost, `optimizer.steps=0` (s) vs `python -c "import mlflow"` '
        f"| {med['on 0']:.2f} | {med['floor']:.2f} | {fixed_ratio:.2f} | ≤ {FIXED_TARGET} "
        f"| {verdict(fixed_ratio, FIXED_TARGET)} |"
    )
    print("\n| variant | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        label = '`python -c "import mlflow"`' if name == "floor" else f"tracking {name} steps"
        print(f"| {label} | {med[name]:.3f} | {min(values):.3f} | {max(values):.3f} |")


if __name__ == "__main__":
    main()
