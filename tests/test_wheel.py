"""The built wheel, installed into a fresh venv, runs from outside the checkout.

This proves the configs and the Iris CSV ship inside the package, and that the
wheel's dependency metadata is complete.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import numgrad_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel and its dependencies; returns its bin dir."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(tmp / "dist")],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("numgrad-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    bin_dir = tmp / "venv" / "bin"
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return bin_dir


def outside_env(bin_dir: Path) -> dict[str, str]:
    """The venv's PATH and no PYTHONPATH: a checkout on it would be imported first."""
    env = numgrad_env(PATH=f"{bin_dir}:/usr/bin:/bin")
    env.pop("PYTHONPATH", None)
    return env


def run_outside(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "numgrad"), *args], cwd=cwd, env=outside_env(bin_dir),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_wheel_imports_from_the_venv_not_the_checkout(installed, tmp_path):
    out = subprocess.run(
        [installed / "python", "-c", "import numgrad; print(numgrad.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True, env=outside_env(installed),
    ).stdout  # fmt: skip
    assert str(installed.parent) in out and str(ROOT) not in out


def test_cfg_job_from_outside_the_checkout(installed, tmp_path):
    proc = run_outside(installed, tmp_path, "--cfg", "job", "data=iris")
    assert proc.returncode == 0, proc.stderr
    assert "name: iris" in proc.stdout and "shape:\n  - 4\n  - 3" in proc.stdout


def test_short_run_from_outside_the_checkout(installed, tmp_path):
    proc = run_outside(installed, tmp_path, "data=iris", "optimizer.steps=5")
    assert proc.returncode == 0, proc.stderr
    assert "finished after 5 steps" in proc.stdout
    assert (tmp_path / "outputs" / "mlflow.db").is_file()
