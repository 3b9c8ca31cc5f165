"""Shared fixtures: run the installed ``numgrad`` script, start a real ``mlflow server``.

Every subprocess runs with its Hydra dirs and its MLflow store under ``tmp_path``,
so no test writes into the repository's ``outputs/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

NUMGRAD = shutil.which("numgrad") or "numgrad"


def numgrad_env(**extra: str) -> dict[str, str]:
    """The environment for a ``numgrad`` subprocess: no inherited tracking URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


@dataclass
class Workdir:
    """A scratch directory to run ``numgrad`` from, as a user would."""

    path: Path

    @property
    def store(self) -> Path:
        return self.path / "outputs" / "mlflow.db"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store}"

    def argv(self, *overrides: str, multirun: bool = False) -> list[str]:
        dirs = [
            f"hydra.run.dir={self.path}/run",
            f"hydra.sweep.dir={self.path}/multirun",
        ]
        return [NUMGRAD, *(["-m"] if multirun else []), *dirs, *overrides]

    def run(
        self,
        *overrides: str,
        multirun: bool = False,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 240,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*overrides, multirun=multirun),
            cwd=self.path,
            env=env or numgrad_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"numgrad exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def popen(self, *overrides: str, multirun: bool = False, **kw) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*overrides, multirun=multirun),
            cwd=self.path,
            env=kw.pop("env", None) or numgrad_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )


@pytest.fixture
def workdir(tmp_path: Path) -> Workdir:
    """A fresh directory to start ``numgrad`` in; its default store is ``outputs/mlflow.db``."""
    return Workdir(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    """A real ``mlflow server`` subprocess on 127.0.0.1 with its own store."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> None:
        cmd: Sequence[str] = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        with open(self.root / "server.log", "ab") as log:  # the server keeps its own copy
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                # no job-runner processes: the tests need only the tracking API
                env=numgrad_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server died:\n{(self.root / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server not up after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)  # the server forks workers: stop the whole group
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Start a real tracking server on a free loopback port, stop it afterwards."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
