"""Time the three gradient engines and print a Markdown table.

Run: ``python benchmarks/bench_gradients.py`` (one to two minutes; the 784x10 loops dominate).

A second table times wide steps, ``h * max|x| > 1``, where the vectorized engine
once fell back to the loop: the same inputs at the default step and at a wide one.
A third runs the fast engines in float32 at h = 1e-2 (near float32's best step),
with their relative error against the same engine in float64.

Each engine is timed on the same inputs in one process: a warm-up call, then the
median of several calls (``time.perf_counter``). Inputs are pixel-like
``x ~ U[0, 1)``, weights ``0.01 * N(0, 1)`` (the book's ``weight_init_std``) and
random labels, all from a fixed-seed ``numpy.random.Generator``. The vectorized
engine's peak memory is measured with ``tracemalloc`` in a separate call, since
tracing slows the code down.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from functools import partial

import numpy as np

from _machine import machine  # benchmarks/ is on sys.path when run as a script
from numgrad.gradient import analytic_gradient, loop_gradient, relative_error, vectorized_gradient
from numgrad.net import SimpleNet

H = 1e-4
SEED = 2024
# (n_inputs, n_classes, batch, repeats of the loop engine); the fast engines repeat more.
CASES = [(2, 3, 1, 200), (50, 10, 32, 20), (784, 10, 100, 3), (784, 10, 1000, 1)]
# (n_inputs, n_classes, batch, x scale, wide h): 784x10 pixels scaled by 50 at h = 5e-2
# (h max|x| ~ 2.5), and unscaled 0..255 pixel values at h = 1e-1 (~ 25).
WIDE_CASES = [(784, 10, 100, 50.0, 5e-2), (784, 10, 100, 255.0, 1e-1)]
FLOAT32_H = 1e-2


def median_ms(fn, repeats: int):
    """Median wall time of ``fn()`` in ms, and its result.

    One warm-up call first, except for single slow runs (the big loops), where
    first-call effects are negligible and a second call would cost many seconds.
    """
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), result


def peak_mb(fn) -> float:
    """Peak memory traced by ``tracemalloc`` (numpy reports its buffers) during ``fn()``."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def run_case(n_inputs: int, n_classes: int, batch: int, loop_repeats: int) -> str:
    rng = np.random.default_rng(SEED)
    W = SimpleNet.random((n_inputs, n_classes), rng, scale=0.01).W
    x = rng.random((batch, n_inputs))
    labels = rng.integers(0, n_classes, batch)
    fast_repeats = 200 if n_inputs * batch < 10_000 else 30

    loop_ms, loop = median_ms(lambda: loop_gradient(W, x, labels, H), loop_repeats)
    vec_ms, vec = median_ms(lambda: vectorized_gradient(W, x, labels, H), fast_repeats)
    ana_ms, _ = median_ms(lambda: analytic_gradient(W, x, labels), 10 * fast_repeats)
    peak = peak_mb(lambda: vectorized_gradient(W, x, labels, H))
    error = np.abs(vec - loop).max()
    return (
        f"| {n_inputs}x{n_classes}, batch {batch} | {loop_ms:.3g} | {vec_ms:.3g} | {ana_ms:.3g} "
        f"| {loop_ms / vec_ms:.0f}x | {vec_ms / ana_ms:.1f}x | {peak:.1f} | {error:.1e} |"
    )


def run_wide_case(n_inputs: int, n_classes: int, batch: int, scale: float, h: float) -> str:
    rng = np.random.default_rng(SEED)
    W = SimpleNet.random((n_inputs, n_classes), rng, scale=0.01).W
    x = scale * rng.random((batch, n_inputs))
    labels = rng.integers(0, n_classes, batch)
    near_ms, _ = median_ms(lambda: vectorized_gradient(W, x, labels, H), 30)
    wide_ms, wide = median_ms(lambda: vectorized_gradient(W, x, labels, h), 30)
    loop_ms, loop = median_ms(lambda: loop_gradient(W, x, labels, h), 1)
    return (
        f"| {n_inputs}x{n_classes}, batch {batch}, x·{scale:g}, h={h:g} "
        f"| {h * np.abs(x).max():.3g} | {near_ms:.3g} | {wide_ms:.3g} | {wide_ms / near_ms:.1f}x "
        f"| {loop_ms:.4g} | {loop_ms / wide_ms:.0f}x | {relative_error(wide, loop):.1e} |"
    )


def run_float32_case(n_inputs: int, n_classes: int, batch: int, _: int) -> str:
    rng = np.random.default_rng(SEED)
    W = SimpleNet.random((n_inputs, n_classes), rng, scale=0.01).W
    x = rng.random((batch, n_inputs))
    labels = rng.integers(0, n_classes, batch)
    W32, x32 = W.astype(np.float32), x.astype(np.float32)
    cells = []
    for engine in (
        lambda W, x: vectorized_gradient(W, x, labels, FLOAT32_H),
        lambda W, x: analytic_gradient(W, x, labels),
    ):
        ms64, grad64 = median_ms(partial(engine, W, x), 30)
        ms32, grad32 = median_ms(partial(engine, W32, x32), 30)
        cells += [f"{ms64:.3g}", f"{ms32:.3g}", f"{ms64 / ms32:.1f}x"]
        cells.append(f"{relative_error(grad32, grad64):.1e}")
    return f"| {n_inputs}x{n_classes}, batch {batch} | " + " | ".join(cells) + " |"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(machine())
    print(f"h = {H}; median wall time; x ~ U[0, 1), W = 0.01 N(0, 1), seed {SEED}")
    print()
    print(
        "| case | loop (ms) | vectorized (ms) | analytic (ms) | loop/vectorized "
        "| vectorized/analytic | vectorized peak MB | max \\|vec−loop\\| |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in CASES:
        print(run_case(*case), flush=True)
    print()
    print(f"Wide steps: x ~ scale * U[0, 1); the near-1 form at h = {H} on the same data")
    print()
    print(
        f"| case | h max\\|x\\| | vectorized at h={H:g} (ms) | vectorized at wide h (ms) "
        "| wide/near-1 | loop at wide h (ms) | loop/vectorized | relative error vs loop |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for case in WIDE_CASES:
        print(run_wide_case(*case), flush=True)
    print()
    print(f"float32 against float64, h = {FLOAT32_H}; x ~ U[0, 1)")
    print()
    print(
        "| case | vectorized float64 (ms) | vectorized float32 (ms) | speed-up | rel. error "
        "| analytic float64 (ms) | analytic float32 (ms) | speed-up | rel. error |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in CASES[1:]:
        print(run_float32_case(*case), flush=True)


if __name__ == "__main__":
    main()
