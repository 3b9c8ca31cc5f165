"""Shared fixtures and helpers: the installed ``numgrad`` script, real MLflow stores.

Every subprocess runs with its Hydra dirs and its MLflow store under ``tmp_path``,
so no test writes into the repository's ``outputs/``. Whatever a test checks about a
run it reads back from the store (``MlflowClient``, ``sqlite3``), never from the code
that wrote it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

NUMGRAD = shutil.which("numgrad") or "numgrad"


def pytest_configure(config: pytest.Config) -> None:
    # A shell script that starts the suite in the background (`pytest &`) hands it SIGINT
    # ignored, and ignored signals pass on to every command a test starts; numgrad rightly
    # leaves an ignored SIGINT alone, so the Ctrl-C tests would see nothing. The suite
    # takes Python's own Ctrl-C back. (An ignored SIGHUP, nohup's, is the user's wish: the
    # SIGHUP tests set it for themselves.)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


# ----------------------------------------------------------------- MLflow stores


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store with MLflow's tables, made once: creating one costs ~2 s."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> str:
    """The URI of a fresh copy of the empty store at ``tmp_path/outputs/mlflow.db``."""
    (tmp_path / "outputs").mkdir()
    shutil.copyfile(empty_store, tmp_path / "outputs" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"


def settings(uri: str | None = None, **extra):
    """Tracking settings as the runner gets them: the schema's node, defaults and all."""
    from numgrad.config import TrackingConfig

    return TrackingConfig(uri=uri, **extra)


def all_runs(uri: str, experiment: str = "numgrad"):
    """The client and every run of ``experiment`` (none if it does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def experiment_for(client, uri: str, name: str = "numgrad") -> str:
    """The id of experiment ``name``, made if missing, with its artifacts beside the store.

    MLflow's own default for a SQLite store is ``./mlruns`` in the current directory,
    which in a test is the repository itself.
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None  # a server decides where its artifacts go
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a metric as the store holds it, sorted by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def read_csv(client, run_id: str) -> np.ndarray:
    """The run's ``history.csv`` artifact as a structured array."""
    path = client.download_artifacts(run_id, "history.csv")
    return np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True))


def answers(url: str) -> bool:
    """Does ``url`` answer 200 right now (a server's ``/health`` or ``/ping``)?"""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(probe, timeout: float = 60.0, every: float = 0.1):
    """Poll ``probe()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"nothing after {timeout} s")


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def store_rows(db: Path, sql: str) -> list[tuple]:
    """Rows from a store another process is writing; [] while it has no such table."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


@contextlib.contextmanager
def running(proc: subprocess.Popen):
    """Yield a started process; afterwards make sure it is gone and its pipes closed."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(ValueError, OSError):  # already communicated
            proc.communicate(timeout=30)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found
