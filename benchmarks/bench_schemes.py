"""The finite-difference schemes side by side: time and error per scheme and engine, and h.

Run: ``pip install numdifftools`` (the ``bench`` extra), then
``python benchmarks/bench_schemes.py`` (about four minutes, two of them numdifftools at
784x10; ``--quick`` leaves those out).

Table 1 times each scheme's loop and vectorized engine, at the scheme's
``gradient.h=auto``, beside numdifftools' ``Gradient`` (central differences with
Richardson extrapolation, and ``method="complex"``) on the same loss. Error is against
the analytic gradient, relative to its largest entry. Inputs are pixel-like
``x ~ U[0, 1)``, weights ``0.01 * N(0, 1)`` and random labels from a fixed seed; each
time is the median of several calls after a warm-up (one call for the slow ones).

Table 2 is the study the README describes, run through the ``numgrad`` command on the
article example and on iris: ``numgrad -m gradient.scheme=... gradient.h=<half decades>,auto
gradient.check=true optimizer.steps=0``, read back from ``sweep_summary.csv``. Per
scheme: the h with the least relative error (``grad_rel_error``, the run's own check),
that error, and the error at ``gradient.h=auto``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from _machine import machine, script  # benchmarks/ is on sys.path when run as a script
from bench_gradients import median_ms
from numgrad.gradient import analytic_gradient, loss_from_labels
from numgrad.net import SimpleNet
from numgrad.schemes import SCHEMES

SEED = 2024
NAMES = ("forward", "central", "central4", "complex")
# (n_inputs, n_classes, batch, repeats of the loop engines)
CASES = [(2, 3, 1, 50), (50, 10, 32, 3), (784, 10, 100, 1)]
# Half decades from 1e-1 to 1e-12, then steps only the complex step can take.
STEPS = [*[f"{m}e-{k}" for k in range(1, 13) for m in (3, 1)][1:], "1e-20", "1e-100", "1e-300"]
DATA = {"article": (), "iris": ("data=iris",)}


def error(grad: np.ndarray, reference: np.ndarray) -> float:
    """Largest deviation from the analytic gradient, relative to its largest entry."""
    return float(np.abs(grad - reference).max() / np.abs(reference).max())


def speed_table(quick: bool) -> tuple[str, dict]:
    lines = [
        "| case | engine | h | time (ms) | error |",
        "|---|---|---:|---:|---:|",
    ]
    found = {}
    for n_inputs, n_classes, batch, loop_repeats in CASES:
        rng = np.random.default_rng(SEED)
        W = SimpleNet.random((n_inputs, n_classes), rng, scale=0.01).W
        x = rng.random((batch, n_inputs))
        labels = rng.integers(0, n_classes, batch)
        reference = analytic_gradient(W, x, labels)
        case = f"{n_inputs}x{n_classes}, batch {batch}"
        fast = 200 if n_inputs * batch < 10_000 else 30
        for name in NAMES:
            scheme = SCHEMES[name]
            h = scheme.auto_h(W, x)
            for method, repeats in (("vectorized", fast), ("loop", loop_repeats)):
                engine = getattr(scheme, method)
                ms, grad = median_ms(partial(engine, W, x, labels, h), repeats)
                found[case, name, method] = (ms, error(grad, reference))
                lines.append(f"| {case} | {name}, {method} | {h:.2g} | {ms:.3g} | "
                             f"{error(grad, reference):.1e} |")  # fmt: skip
        if quick and n_inputs > 100:
            continue
        for name, row in numdifftools_rows(W, x, labels, reference, 1 if n_inputs > 100 else 5):
            found[case, name, "numdifftools"] = row
            lines.append(f"| {case} | numdifftools {name} | | {row[0]:.3g} | {row[1]:.1e} |")
    return "\n".join(lines), found


def numdifftools_rows(W, x, labels, reference, repeats):
    try:
        import numdifftools as nd
    except ImportError:
        sys.exit("numdifftools is not installed: pip install numdifftools (the bench extra)")
    shape = W.shape

    def loss(w):  # numdifftools passes a flat, possibly complex, point
        return loss_from_labels(w.reshape(shape), x, labels)

    for label, method in (("central, Richardson", "central"), ("complex step", "complex")):
        gradient = nd.Gradient(loss, method=method)
        ms, grad = median_ms(lambda g=gradient: g(W.ravel()), repeats)
        yield label, (ms, error(grad.reshape(shape), reference))


def study(args: tuple[str, ...]) -> list[dict[str, str]]:
    numgrad = script("numgrad")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with tempfile.TemporaryDirectory(prefix="bench-schemes-") as tmp:
        argv = [
            *numgrad, "-m", f"gradient.scheme={','.join(NAMES)}",
            f"gradient.h={','.join(STEPS)},auto", "gradient.check=true", "optimizer.steps=0",
            "tracking.enabled=false", f"hydra.sweep.dir={tmp}/sweep", *args,
        ]  # fmt: skip
        # Exit status 1: the real steps' jobs at h = 1e-20 and below are refused (counted).
        proc = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        with open(Path(tmp) / "sweep" / "sweep_summary.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    if len(rows) != len(NAMES) * (len(STEPS) + 1):
        sys.exit(f"the study {' '.join(args)} gave {len(rows)} rows: {proc.stderr[-2000:]}")
    return rows


def study_table() -> tuple[str, dict]:
    lines = [
        "| data | scheme | best h (measured) | rel. error at best h | h = auto | rel. error "
        "at auto | auto / best | h refused or too small |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    found = {}
    for data, args in DATA.items():
        rows = study(args)
        for name in NAMES:
            mine = [r for r in rows if r["gradient.scheme"] == name]
            done = {r["gradient.h"]: float(r["grad_rel_error"]) for r in mine
                    if r["status"] == "FINISHED" and r["grad_rel_error"]}  # fmt: skip
            failed = sum(r["status"] != "FINISHED" for r in mine)
            measured = {h: e for h, e in done.items() if h != "auto"}
            best = min(measured, key=lambda h: (measured[h], -float(h)))
            auto = done["auto"]
            ratio = auto / measured[best] if measured[best] > 0 else math.inf
            found[data, name] = (float(best), measured[best], auto, ratio)
            lines.append(
                f"| {data} | {name} | {best} | {measured[best]:.1e} | "
                f"{auto_h_used(data, name):.2g} | {auto:.1e} | {ratio:.1f}x | {failed} |"
            )
    return "\n".join(lines), found


def auto_h_used(data: str, name: str) -> float:
    """The h ``gradient.h=auto`` chose for ``data`` (the runner's own choice, reproduced)."""
    from hydra import compose, initialize_config_dir

    from numgrad.cli import CONFIG_DIR
    from numgrad.config import register_configs
    from numgrad.data import load_data
    from numgrad.runner import initial_weights

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="bench"):
        cfg = compose(config_name="config", overrides=[*DATA[data], f"gradient.scheme={name}"])
    rng = np.random.default_rng(cfg.seed)
    shape = list(cfg.net.shape)
    x, t = load_data(cfg.data, shape, rng)
    net = SimpleNet(initial_weights(cfg.net, shape, rng))
    x2d, _ = net.prepare(x, t)
    return SCHEMES[name].auto_h(net.W, x2d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="leave numdifftools at 784x10 out")
    quick = parser.parse_args().quick
    print(machine())
    speed, found = speed_table(quick)
    print("\n" + speed + "\n")
    case_big, case_mid = "784x10, batch 100", "50x10, batch 32"
    ratio = (
        found[case_big, "complex", "vectorized"][0] / found[case_big, "central", "vectorized"][0]
    )
    print(f"vectorized complex / vectorized central at {case_big}: {ratio:.2f}x (target <= 3x)")
    mine, theirs = found[case_mid, "complex", "vectorized"], found[case_mid, "complex step",
                                                                   "numdifftools"]  # fmt: skip
    print(f"numdifftools complex / numgrad vectorized complex at {case_mid}: "
          f"{theirs[0] / mine[0]:.0f}x faster (target >= 30x), error {mine[1]:.1e} against "
          f"{theirs[1]:.1e} (target <= 10x theirs)")  # fmt: skip
    table, study_found = study_table()
    print("\n" + table + "\n")
    for data in DATA:
        best_c4 = study_found[data, "central4"][1]
        print(
            f"{data}: central4 at its best h {best_c4:.1e} (target <= 1e-12); auto within "
            + ", ".join(f"{n} {study_found[data, n][3]:.1f}x" for n in NAMES)
            + " of the best (target <= 10x)"
        )


if __name__ == "__main__":
    main()
