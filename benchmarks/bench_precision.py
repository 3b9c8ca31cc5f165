"""The central difference's error against h, in float32 and float64: the V, measured.

Run: ``python benchmarks/bench_precision.py`` (under a minute). For each data set it
runs the sweep the README describes,
``numgrad -m gradient.dtype=float32,float64 gradient.h=<h> gradient.check=true
optimizer.steps=0 tracking.enabled=false``, reads its ``sweep_summary.csv`` and prints,
per dtype, the h with the smallest relative error against the float64 analytic
gradient, that error, and the errors at the ends of the range. Jobs whose h hides the
gradient (every quotient exactly 0: ``StepTooSmall``) are counted, not plotted.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
from pathlib import Path

from _machine import machine, script  # benchmarks/ is on sys.path when run as a script

HS = ("1e-1", "3e-2", "1e-2", "3e-3", "1e-3", "1e-4", "1e-5", "1e-6", "1e-7", "1e-8", "1e-9")
DATA = {
    "article (the book's sample)": (),
    "iris (150 samples)": ("data=iris", "data.test_fraction=0"),
}
THEORY = {"float32": "≈ 5e-3", "float64": "≈ 6e-6"}  # eps^(1/3)


def sweep_rows(args: tuple[str, ...]) -> list[dict[str, str]]:
    numgrad = script("numgrad")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        argv = [
            *numgrad, "-m", "gradient.dtype=float32,float64", f"gradient.h={','.join(HS)}",
            "gradient.check=true", "optimizer.steps=0", "tracking.enabled=false",
            f"hydra.sweep.dir={tmp}/sweep", *args,
        ]  # fmt: skip
        # Exit status 1 when some h is too small: those jobs are counted below.
        subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        with open(Path(tmp) / "sweep" / "sweep_summary.csv", newline="") as f:
            return list(csv.DictReader(f))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(machine() + "\n")
    print(f"h in {{{', '.join(HS)}}}; relative error ‖numerical − analytic‖ / (‖·‖ + ‖·‖), "
          "the analytic gradient in float64; the gradient at W0 (optimizer.steps=0)\n")  # fmt: skip
    print(
        "| data | dtype | best h (measured) | ε^(1/3) | rel. error at best h "
        "| at h = 1e-1 | at the smallest h that works | h too small (failed) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, args in DATA.items():
        rows = sweep_rows(args)
        for dtype in ("float32", "float64"):
            done = {float(r["gradient.h"]): float(r["grad_rel_error"]) for r in rows
                    if r["dtype"] == dtype and r["status"] == "FINISHED"}  # fmt: skip
            failed = sum(r["status"] != "FINISHED" and dtype in r["overrides"] for r in rows)
            best = min(done, key=done.get)
            smallest = min(done)
            print(
                f"| {label} | {dtype} | {best:g} | {THEORY[dtype]} | {done[best]:.1e} "
                f"| {done[0.1]:.1e} | {done[smallest]:.1e} (h={smallest:g}) | {failed} |"
            )


if __name__ == "__main__":
    main()
