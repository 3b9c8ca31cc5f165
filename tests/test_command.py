"""One wrapper for the four commands: exit statuses, one line, signals (numgrad.command).

The first tests run :func:`numgrad.command.run_command` in this process; the slow ones
start each console script (``numgrad``, ``numgrad-ui``, ``numgrad-sync``,
``numgrad-rerun``), wait until it is busy with its real work, send SIGTERM or SIGINT,
and read what it printed and how it ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from numgrad import command, signals
from numgrad.command import NotSynced, UsageError, exit_status, run_command
from numgrad.config import ConfigError
from numgrad.descent import Diverged, StepTooSmall
from numgrad.tracking.journal import JournalError
from numgrad.tracking.logged import LoggedRunError
from numgrad.tracking.uri import TrackingError
from tests.conftest import all_runs, answers, free_port, numgrad_env, running, wait_for

ENDED_BY = {
    signal.SIGINT: (130, "interrupted"),
    signal.SIGTERM: (143, "terminated"),
    signal.SIGHUP: (129, "terminated"),  # the terminal closed: like SIGTERM
}


def test_exceptions_carry_their_exit_status():
    assert exit_status(ConfigError("optimizer.lr", -1.0, "must be > 0")) == 2
    assert exit_status(TrackingError("no store")) == exit_status(LoggedRunError("no run")) == 2
    assert exit_status(UsageError("no such file")) == 2
    assert exit_status(JournalError("line 3 is not a journal record")) == 1
    assert exit_status(NotSynced("recorded locally")) == 75
    assert exit_status(Diverged(3, "loss", float("nan"))) == 1
    assert exit_status(StepTooSmall.__new__(StepTooSmall)) == 1  # whatever its message
    assert exit_status(KeyboardInterrupt()) == 130
    assert exit_status(signals.Terminated()) == 143
    assert exit_status(signals.Terminated(signal.SIGHUP)) == 129
    # a bug keeps its traceback; SystemExit is argparse's, already said
    assert exit_status(KeyError("x")) is None and exit_status(SystemExit(2)) is None


def test_run_command_reports_in_one_line_and_exits_with_the_status(capsys):
    def refuse():
        raise ConfigError("optimizer.lr", -1.0, "must be > 0")

    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", refuse)
    assert info.value.code == 2
    assert capsys.readouterr().err == "numgrad-x: error: invalid optimizer.lr=-1.0: must be > 0\n"
    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", lambda: command.FAILED)
    assert info.value.code == 1 and capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", lambda: None)
    assert info.value.code == 0

    def not_synced():
        raise NotSynced("the run is recorded locally in j.jsonl")

    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", not_synced)
    assert info.value.code == 75  # not an error: what happened, as it is
    assert capsys.readouterr().err == "numgrad-x: the run is recorded locally in j.jsonl\n"


def test_a_bug_keeps_its_traceback_and_argparse_its_exit(capsys):
    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        run_command("numgrad-x", bug)
    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", lambda: sys.exit(2))
    assert info.value.code == 2 and capsys.readouterr().err == ""


@pytest.fixture
def hangup_as_on_a_terminal():
    """SIGHUP at its default, as a terminal's session has it: a suite started under
    ``nohup`` inherits it ignored, and numgrad rightly leaves an ignored SIGHUP alone."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.mark.usefixtures("hangup_as_on_a_terminal")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_in_the_body_is_one_line_and_handlers_are_restored(capsys, sig):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as info:
        run_command("numgrad-x", lambda: signal.raise_signal(sig))
    code, word = ENDED_BY[sig]
    assert info.value.code == code and capsys.readouterr().err == f"numgrad-x: {word}\n"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


# ------------------------------------------------ each command, busy, signalled


def script(name: str) -> str:
    """The console script itself: a shell shim in between (pyenv) would take the signal."""
    beside = Path(sys.executable).parent / name
    return str(beside if beside.is_file() else shutil.which(name))


def start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=cwd, env=numgrad_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_hangup_at_its_default)  # fmt: skip


def _hangup_at_its_default() -> None:
    # As under a terminal, whether or not this suite was started with nohup.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_under_nohup_a_hangup_is_left_ignored(capsys):
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup hands its command
    seen = []

    def body() -> None:
        seen.append(signal.getsignal(signal.SIGHUP))
        signal.raise_signal(signal.SIGHUP)  # the terminal closes: the command goes on

    try:
        with pytest.raises(SystemExit) as info:
            run_command("numgrad-x", body)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert seen == [signal.SIG_IGN]
    assert info.value.code == 0 and capsys.readouterr().err == ""


def descending(uri: str, output_dir: Path) -> bool:
    """Is the run of ``output_dir`` in the store with steps already: mid-descent, not starting?"""
    client, runs = all_runs(uri)
    return any(
        r.data.tags.get("numgrad.output_dir") == str(output_dir)
        and client.get_metric_history(r.info.run_id, "loss")
        for r in runs
    )


def signalled(proc: subprocess.Popen[str], sig: int, prog: str) -> str:
    """Send ``sig``; the command must end with its status and one line, no traceback."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    code, word = ENDED_BY[sig]
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == f"{prog}: {word}", err
    assert err.count(f"{prog}: {word}") == 1, err
    return err


def copy_store(empty_store: Path, folder: Path) -> str:
    (folder / "outputs").mkdir(parents=True)
    shutil.copyfile(empty_store, folder / "outputs" / "mlflow.db")
    return f"sqlite:///{folder / 'outputs' / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_numgrad_mid_descent(tmp_path, empty_store, sig):
    uri = copy_store(empty_store, tmp_path)
    run_dir = tmp_path / "run"
    argv = [script("numgrad"), f"hydra.run.dir={run_dir}", "optimizer.steps=100000000",
            "tracking.flush_seconds=0.2"]  # fmt: skip
    with running(start(argv, tmp_path)) as proc:
        wait_for(lambda: proc.poll() is not None or descending(uri, run_dir), timeout=120)
        assert proc.poll() is None, proc.communicate()
        err = signalled(proc, sig, "numgrad")
    assert err == f"numgrad: {ENDED_BY[sig][1]}\n"  # the only line
    (run,) = all_runs(uri)[1]
    assert run.info.status == "KILLED"


@contextlib.contextmanager
def serving_ui(tmp_path: Path, empty_store: Path):
    """numgrad-ui answering on a free port; yields it, its port and its server's process group.

    Afterwards whatever is left of the group is killed, so that a failed test leaves no
    server behind.
    """
    import psutil

    copy_store(empty_store, tmp_path)
    port = free_port()
    with running(start([script("numgrad-ui"), "--port", str(port)], tmp_path)) as proc:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health") or proc.poll(), timeout=120)
        assert proc.poll() is None, proc.communicate()
        (server,) = psutil.Process(proc.pid).children()
        group = os.getpgid(server.pid)
        assert group == server.pid != os.getpgid(proc.pid)  # its own group: Ctrl-C is ours
        members = [p for p in psutil.process_iter() if _group(p) == group]
        assert len(members) >= 2  # the server and its worker(s)
        try:
            yield proc, port, members
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def running_members(members: list) -> list:
    import psutil

    return [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_numgrad_ui_serving_takes_its_server_group_down(tmp_path, empty_store, sig):
    with serving_ui(tmp_path, empty_store) as (proc, port, members):
        err = signalled(proc, sig, "numgrad-ui")
        assert err.splitlines()[0].startswith("numgrad-ui: MLflow UI on")  # its lines come first
        assert running_members(members) == []
    assert not answers(f"http://127.0.0.1:{port}/health")


@pytest.mark.slow
def test_numgrad_ui_killed_outright_takes_its_server_along(tmp_path, empty_store):
    # SIGKILL runs no handler of numgrad-ui's: the kernel tells the server (PR_SET_PDEATHSIG).
    with serving_ui(tmp_path, empty_store) as (proc, port, members):
        proc.kill()
        proc.wait()
        assert wait_for(lambda: running_members(members) == [], timeout=30)
        assert not answers(f"http://127.0.0.1:{port}/health")


def _group(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except ProcessLookupError:
        return None


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> Path:
    """A finished offline run with 50,000 metric values: a few seconds of uploading."""
    folder = tmp_path_factory.mktemp("offline")
    run_dir = folder / "run"
    argv = [script("numgrad"), f"hydra.run.dir={run_dir}", "optimizer.steps=10000",
            "tracking.offline=true", "tracking.max_points=20000"]  # fmt: skip
    subprocess.run(argv, cwd=folder, env=numgrad_env(), check=True, capture_output=True)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_numgrad_sync_mid_upload(tmp_path, empty_store, offline_run, sig):
    uri = copy_store(empty_store, tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(offline_run, run_dir)
    argv = [script("numgrad-sync"), str(run_dir), "--uri", uri]
    with running(start(argv, tmp_path)) as proc:
        wait_for(lambda: all_runs(uri)[1] or proc.poll() is not None, timeout=120, every=0.05)
        assert proc.poll() is None, proc.communicate()  # its run is there: it is uploading
        err = signalled(proc, sig, "numgrad-sync")
    assert err == f"numgrad-sync: {ENDED_BY[sig][1]}\n"  # the only line


@pytest.fixture(scope="module")
def logged(tmp_path_factory, empty_store) -> tuple[Path, str, str]:
    """A directory with a store holding one finished run: (dir, store URI, run id)."""
    folder = tmp_path_factory.mktemp("logged")
    uri = copy_store(empty_store, folder)
    argv = [script("numgrad"), f"hydra.run.dir={folder}/orig", "optimizer.steps=1"]
    subprocess.run(argv, cwd=folder, env=numgrad_env(), check=True, capture_output=True)
    (run,) = all_runs(uri)[1]
    return folder, uri, run.info.run_id


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_numgrad_rerun_mid_run(logged, sig):
    folder, uri, run_id = logged
    run_dir = folder / f"rerun-{sig.name}"
    argv = [script("numgrad-rerun"), run_id, "optimizer.steps=100000000",
            "tracking.flush_seconds=0.2", f"hydra.run.dir={run_dir}"]  # fmt: skip
    with running(start(argv, folder)) as proc:
        wait_for(lambda: proc.poll() is not None or descending(uri, run_dir), timeout=120)
        assert proc.poll() is None, proc.communicate()
        err = signalled(proc, sig, "numgrad-rerun")
    assert err == f"numgrad-rerun: {ENDED_BY[sig][1]}\n"  # the only line
    (rerun,) = [r for r in all_runs(uri)[1] if r.data.tags.get("numgrad.rerun_of") == run_id
                and r.data.tags["numgrad.output_dir"] == str(run_dir)]  # fmt: skip
    assert rerun.info.status == "KILLED"
    assert rerun.data.tags["numgrad.stop_reason"] == ENDED_BY[sig][1]
