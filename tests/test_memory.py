"""The memory estimate against tracemalloc's measure, what is available, the refusal."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from numgrad import memory
from numgrad.config import ConfigError, DType, Method, NumgradConfig
from numgrad.data import SOURCES, load_data
from numgrad.descent import Descent
from numgrad.gradient import ENGINES
from numgrad.memory import available_bytes, check_memory, required_bytes
from numgrad.net import SimpleNet
from tests.conftest import numgrad_env

GB = 10**9


def config(shape=(2, 3), n_samples=60, source="blobs", **gradient):
    cfg = OmegaConf.structured(NumgradConfig(data=SOURCES[source].Schema()))
    cfg.net.shape = list(shape)
    if source == "blobs":
        cfg.data.n_samples = n_samples
    for key, value in gradient.items():
        cfg.gradient[key] = value
    return cfg


def measured_peak(shape, n_samples, method, check=False, dtype=np.float64):
    """tracemalloc's peak over the runner's pieces: load blobs, W0, a 2-step descent.

    As the runner does it: x and t stay referenced while the descent runs, W_init is
    copied for tracking before it and W_final after it.
    """
    cfg = config(shape, n_samples)
    tracemalloc.start()
    try:
        rng = np.random.default_rng(0)
        x, t = load_data(cfg.data, list(shape), rng)
        net = SimpleNet(SimpleNet.random(tuple(shape), rng).W, dtype=dtype)  # as the runner
        x2d, labels = net.prepare(x, t)
        W = net.W
        descent = Descent(W, x2d, labels, ENGINES[method], h=1e-3, lr=0.1, steps=2, check=check)
        W_init = W.copy()
        for _ in descent:
            pass
        W_final = W.copy()
        assert W_init.shape == W_final.shape
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Each case has one kind of array dominate: x (784 inputs), (samples x classes)
# (few inputs, many samples), W (a big shape, few samples); every engine, the check.
CASES = [
    ((784, 10), 5000, "vectorized", False),
    ((10, 10), 100000, "vectorized", False),
    ((2, 3), 300000, "vectorized", True),
    ((1000, 1000), 10, "vectorized", True),
    ((3000, 200), 50, "vectorized", False),
    ((2, 100000), 30, "vectorized", False),
    ((1000, 1000), 10, "analytic", False),
    ((2, 3), 300000, "analytic", False),
    ((20, 2000), 1000, "analytic", False),
    ((2, 3), 100000, "loop", False),
    ((2, 3), 100000, "loop", True),
    ((30, 10), 5000, "loop", False),
]


@pytest.mark.parametrize(("shape", "n_samples", "method", "check"), CASES)
def test_estimate_bounds_the_measured_peak(shape, n_samples, method, check):
    peak = measured_peak(shape, n_samples, method, check)
    estimate = required_bytes(list(shape), n_samples, method=method, check=check)
    assert peak <= estimate <= 2 * peak, (peak, estimate)


def _core_runs_float32() -> bool:
    """Whether the engines keep float32 (the numeric core is being extended to)."""
    W, x = np.zeros((2, 3), np.float32), np.ones((1, 2), np.float32)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return all(e(W, x, np.array([0]), 1e-2).dtype == np.float32 for e in ENGINES.values())


@pytest.mark.skipif(not _core_runs_float32(), reason="the numeric core runs float64 only, yet")
@pytest.mark.parametrize(("shape", "n_samples", "method", "check"), CASES[:9])
def test_float32_estimate_bounds_the_measured_peak(shape, n_samples, method, check):
    peak = measured_peak(shape, n_samples, method, check, dtype=np.float32)
    estimate = required_bytes(list(shape), n_samples, method=method, itemsize=4, check=check)
    assert peak <= estimate <= 4 * peak, (peak, estimate)


def test_estimate_scales_with_each_size_and_the_float_size():
    base = required_bytes([2, 100], 10**6)
    assert required_bytes([2, 100], 2 * 10**6) > 1.9 * base
    assert required_bytes([10**5, 10**4], 10) > 6 * 10**9 * 8  # six W of 8 GB
    # float32 halves the run's own arrays; its float64 copies (W0's draw, casts) stay
    assert required_bytes([10**5, 10**4], 10, itemsize=4) < 0.8 * required_bytes([10**5, 10**4], 10)
    for method in ("loop", "analytic"):  # no work blocks, fewer temporaries
        assert required_bytes([2, 100], 10**6, method=method) < base


def usable(n_bytes):
    return int(n_bytes * memory.USABLE_FRACTION) - memory.RESERVE_BYTES


def test_available_is_mem_available_less_the_margin(tmp_path):
    assert available_bytes(8 * 2**30, tmp_path / "no-cgroup") == usable(8 * 2**30)
    assert available_bytes(1000 * 1024, tmp_path / "no-cgroup") == 0  # never negative


def test_by_default_the_kernels_mem_available_counts(tmp_path):
    # The kernel's own figure, read here by hand as the reference; it moves a little
    # between the two reads, by what other processes allocate meanwhile.
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable:"))
    assert abs(available_bytes(cgroup=tmp_path / "no-cgroup") - usable(kb * 1024)) < 256 * 2**20


@pytest.mark.parametrize(
    ("files", "room"),
    [
        ({"memory.max": "max\n", "memory.current": "123\n"}, None),
        ({"memory.max": f"{3 * 2**30}\n", "memory.current": f"{2**30}\n"}, 2 * 2**30),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1, no limit
        ({"memory/memory.limit_in_bytes": f"{2**31}\n",
          "memory/memory.usage_in_bytes": f"{2**30}\n"}, 2**30),
    ],
)  # fmt: skip
def test_a_container_limit_bounds_what_is_available(tmp_path, files, room):
    cgroup = tmp_path / "cgroup"
    for name, text in files.items():
        (cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (cgroup / name).write_text(text)
    assert available_bytes(16 * 2**30, cgroup) == usable(16 * 2**30 if room is None else room)


def test_the_address_space_limit_less_what_is_mapped_bounds_it():
    # In a child: a lower RLIMIT_AS cannot be taken back by the test process otherwise.
    code = "from numgrad.memory import *; import pathlib; print(available_bytes())"
    status = "import pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    limit = 3 * 2**30
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{status}"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        capture_output=True, text=True, check=True, env=numgrad_env(),
    ).stdout.splitlines()  # fmt: skip
    vm_size = next(int(line.split()[1]) * 1024 for line in out if line.startswith("VmSize:"))
    # The same VmSize within what the print and read_text allocated in between.
    assert abs(int(out[0]) - usable(limit - vm_size)) < 16 * 2**20


def refusal(cfg, available, data=None) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "available_bytes", lambda: available)
        with pytest.raises(ConfigError) as info:
            check_memory(cfg, data)
    return str(info.value)


def test_a_huge_shape_is_refused_naming_net_shape():
    assert refusal(config((100000, 100000)), 23.1 * GB) == (
        "invalid net.shape=[100000, 100000]: the run would need about 561 GB of memory, "
        "23.1 GB are available"
    )


def test_many_samples_are_refused_naming_data_n_samples():
    assert refusal(config((2, 3), 10**8), 23.1 * GB) == (
        "invalid data.n_samples=100000000: the run would need about 38.4 GB of memory, "
        "23.1 GB are available"
    )


def test_float32_needs_less():
    cfg = config((100000, 100000), dtype=DType.float32)
    assert "would need about 440 GB" in refusal(cfg, 23.1 * GB)


def test_few_samples_of_many_inputs_blame_the_shape():
    # x is samples x inputs: with 60 samples, the inputs make it big.
    message = refusal(config((10**9, 2), 60), 23.1 * GB)
    assert message.startswith("invalid net.shape=[1000000000, 2]: the run would need about 1.47 TB")


def test_a_loaded_file_is_checked_by_its_size_less_what_it_holds(tmp_path):
    cfg = config((2, 1000), source="file")
    cfg.data.path = "big.npz"
    check_memory(cfg)  # before loading: only the weights are known, and small
    x, t = np.ones((10**5, 2)), np.zeros(10**5, dtype=np.int64)
    need = required_bytes([2, 1000], 10**5) - x.nbytes - t.nbytes
    assert refusal(cfg, 10**9, data=(x, t)) == (
        "invalid data.path='big.npz': the run would need about 9.61 GB of memory, "
        "1 GB are available"
    )
    assert refusal(cfg, need - 1, data=(x, t)).startswith("invalid data.path='big.npz'")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(memory, "available_bytes", lambda: need)
        check_memory(cfg, (x, t))


def test_inline_data_is_counted_by_its_rows():
    cfg = config((2, 3), source="article")
    cfg.data.x, cfg.data.t = [[0.6, 0.9]] * 4, [0, 1, 2, 0]
    assert memory.sample_count(cfg.data) == (4, 0)
    cfg.data.x = [0.6, 0.9]
    assert memory.sample_count(cfg.data) == (1, 0)


@pytest.mark.parametrize("method", list(Method))
def test_every_default_sized_run_fits(method):
    for source in SOURCES:
        cfg = config((4, 3) if source == "iris" else (2, 3), source=source)
        cfg.gradient.method = method
        if source == "article":
            cfg.data.x, cfg.data.t = [0.6, 0.9], [0, 0, 1]
        check_memory(cfg)  # the real available memory


# ---------------------------------------------------------------------------------------
# The runner calls check_memory(cfg) right after validate(cfg), and
# check_memory(cfg, data=(x, t)) right after load_data. Without those calls the
# test_runner_refuses_* tests fail: the child hits its address-space cap with a
# MemoryError traceback (the cap keeps it from growing until the OOM killer).

CAP = 3 * 2**30  # far above a small run's needs (it runs in 1.5 GB), far below these


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def capped_run(workdir, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        workdir.argv(*overrides, "tracking.enabled=false"),
        cwd=workdir.path, env=numgrad_env(), preexec_fn=_cap_address_space,
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


AVAILABLE = r", [\d.]+ [kMG]?B are available$"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["net.shape=[100000,100000]", "data=blobs"],
         r"invalid net\.shape=\[100000, 100000\]: the run would need about 561 GB of memory"),
        (["data=blobs", "data.n_samples=100000000"],
         r"invalid data\.n_samples=100000000: the run would need about 38\.4 GB of memory"),
        # Known only once loaded: 200000 samples of 1000 classes (a few MB on disk).
        (["data=file", "data.path=many.npz", "net.shape=[2,1000]"],
         r"invalid data\.path='many\.npz': the run would need about 19\.2 GB of memory"),
    ],
)  # fmt: skip
def test_runner_refuses_a_run_too_big_for_memory(workdir, overrides, message):
    n = 200000
    np.savez(workdir.path / "many.npz", x=np.ones((n, 2)), t=np.arange(n) % 1000)
    proc = capped_run(workdir, *overrides)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err[-2000:]
    assert re.fullmatch("numgrad: error: " + message + AVAILABLE, err), err
    assert not (workdir.path / "run").exists()  # nothing ran: no run dir left behind


@pytest.mark.slow
def test_a_run_that_fits_runs_under_the_same_cap(workdir):
    proc = capped_run(workdir, "data=blobs", "data.n_samples=100000", "net.shape=[10,10]",
                      "optimizer.steps=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished after 2 steps" in proc.stdout


def test_a_source_that_knows_its_features_is_counted_by_them_while_it_loads():
    # digits loads 64 pixels per image whatever net.shape says (the mismatch is refused
    # once loaded): the loading phase counts them, the blobs' centres and two labels.
    loading = (2 * 2 * 10 + 3 * 1797 * 64) * 8 + 2 * 1797 * 8
    assert memory._phases([2, 10], 1797, "vectorized", 8, False, 64)[0] == loading
    assert memory._phases([2, 10], 1797, "vectorized", 8, False)[0] < loading  # by net.shape
    assert memory.sources.sizes(config((2, 10), source="digits").data) == (1797, 64)
