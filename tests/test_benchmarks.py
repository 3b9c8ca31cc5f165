"""The sweep benchmarks run end to end at a tiny size, so that they cannot rot; every
benchmark answers ``--help`` without running.

No timing is checked here (the scripts print their tables; the README quotes them):
each script reads every run back from its store and exits non-zero when one is
incomplete, so its exit status and its table are what is checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import numgrad_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def run_script(name: str, *args: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        cwd=cwd, env=numgrad_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_answers_help_without_running(tmp_path, name):
    # A benchmark takes minutes; --help must say how to run it, not start it.
    out = run_script(name, "--help", cwd=tmp_path)
    assert out.startswith("usage:") and "| " not in out, out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_sender_uploads_every_run_complete_at_a_tiny_size(tmp_path):
    out = run_script("bench_sender.py", "--jobs", "3", "--writers", "2", "--repeats", "1",
                     cwd=tmp_path)  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| variant | seconds | runs/s | vs numgrad-sync | lag median")
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| 2 writers alone (the jobs' pace)", "| numgrad-sync, backlog",
        "| sender, backlog, K=1", "| sender, backlog, K=2",
        "| sender, live beside the writers, K=1", "| sender, live beside the writers, K=2",
    ]  # fmt: skip
    assert "every run complete" in out and "load average" in out


@pytest.mark.slow
def test_bench_model_times_the_dataset_and_the_model_at_a_tiny_size(tmp_path):
    out = run_script("bench_model.py", "--repeats", "1", "--runs", "2", cwd=tmp_path)
    rows = {r.split(" | ")[0][2:]: r.split(" | ")[1:] for r in out.splitlines()
            if r.startswith("| ") and not r.startswith("| measure")}  # fmt: skip
    assert list(rows) == ["dataset input (log_dataset)", "logged model (send_model)",
                          "whole run, `log_model=true`", "whole run, `log_model=false`"]  # fmt: skip
    for label, (first, later) in rows.items():  # milliseconds, measured in both columns
        assert float(first) > 0 and float(later.rstrip(" |")) > 0, label


@pytest.mark.slow
def test_many_core_sweep_quick_checks_every_tracked_sweep_in_its_store(tmp_path):
    out = run_script("many_core_sweep.py", "--quick", cwd=tmp_path)
    checked = [line for line in out.splitlines() if line.startswith("| ") and "FINISHED" in line]
    assert len(checked) == 3  # the tracked sweeps: long with 2 and 1 workers, short with 2
    assert "tracked / untracked with 2 workers" in out
