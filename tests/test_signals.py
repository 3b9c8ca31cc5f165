"""SIGINT/SIGTERM as exceptions, held back around writes (numgrad.signals)."""

from __future__ import annotations

import signal

import pytest

from numgrad import signals


def test_sigterm_raises_terminated_inside_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(signals.Terminated) as info, signals.raising():
        signal.raise_signal(signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_held_signal_is_raised_when_the_block_ends_not_before():
    done = []
    with pytest.raises(KeyboardInterrupt), signals.raising():
        with signals.held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)  # the first signal wins
            done.append("write finished")
        done.append("never reached")
    assert done == ["write finished"]


def test_nested_holds_raise_at_the_outermost_end():
    order = []
    with pytest.raises(signals.Terminated), signals.raising():
        with signals.held():
            with signals.held():
                signal.raise_signal(signal.SIGTERM)
            order.append("inner done")
        order.append("never")
    assert order == ["inner done"]


def test_hooks_run_before_the_exception():
    seen = []
    with pytest.raises(signals.Terminated), signals.raising():
        with signals.on_signal(seen.append):
            signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    with pytest.raises(signals.Terminated), signals.raising():
        signal.raise_signal(signal.SIGTERM)  # the hook is gone with its block
    assert seen == [signal.SIGTERM]


def test_a_sigint_handler_someone_else_set_is_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals.raising():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # ignored, as the owner wants
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------- the numgrad process, at any moment


def numgrad_script() -> str:
    """The console script itself: a shell shim in between (pyenv) would take the signal."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "numgrad"
    return str(beside if beside.is_file() else shutil.which("numgrad"))


def interrupt_at(tmp_path, delay: float, sig: int, *overrides: str):
    """Start ``numgrad`` in ``tmp_path``, send ``sig`` after ``delay`` s; (code, stderr)."""
    import subprocess
    import time

    from tests.conftest import numgrad_env

    proc = subprocess.Popen(
        [numgrad_script(), f"hydra.run.dir={tmp_path}/run", "optimizer.steps=200000", *overrides],
        cwd=tmp_path, env=numgrad_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def assert_sound_store(db) -> list:
    """The store opens, holds no half-made tables, and no run is left RUNNING."""
    from mlflow.tracking import MlflowClient

    from tests.conftest import store_rows

    assert store_rows(db, "PRAGMA integrity_check") == [("ok",)]
    tables = [row[0] for row in store_rows(db, "SELECT name FROM sqlite_master")]
    assert not [t for t in tables if t.startswith("_alembic_tmp")], tables
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    return runs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("delay", "sig"),
    [(0.15, signal.SIGINT), (0.8, signal.SIGTERM), (1.4, signal.SIGINT), (2.0, signal.SIGTERM),
     (2.6, signal.SIGINT), (3.2, signal.SIGTERM), (4.0, signal.SIGINT)],
)  # fmt: skip
def test_a_signal_while_a_new_store_is_made_leaves_it_sound(tmp_path, delay, sig):
    code, err = interrupt_at(tmp_path, delay, sig)
    expected = "interrupted" if sig == signal.SIGINT else "terminated"
    assert code == (130 if sig == signal.SIGINT else 143), err
    assert err.strip().splitlines()[-1] == f"numgrad: {expected}" and "Traceback" not in err
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():  # a signal before the store was begun leaves none
        for run in assert_sound_store(db):
            assert run.info.status == "KILLED" and run.data.tags["numgrad.stop_reason"] == expected
    else:
        assert not (tmp_path / "run").exists()  # nothing started: nothing left


@pytest.mark.slow
def test_a_signal_at_any_moment_on_an_existing_store(tmp_path):
    import subprocess

    from tests.conftest import all_runs, history, numgrad_env

    db = tmp_path / "outputs" / "mlflow.db"
    subprocess.run([numgrad_script(), f"hydra.run.dir={tmp_path}/first", "optimizer.steps=1"],
                   cwd=tmp_path, env=numgrad_env(), check=True, capture_output=True)  # fmt: skip
    for delay, sig in [(0.5, signal.SIGTERM), (1.2, signal.SIGINT), (1.9, signal.SIGTERM),
                       (2.6, signal.SIGINT)]:  # fmt: skip
        code, err = interrupt_at(tmp_path, delay, sig, "tracking.flush_seconds=0.2")
        assert code in (130, 143) and "Traceback" not in err and "None" not in err, err
        assert err.strip().splitlines()[-1] in ("numgrad: interrupted", "numgrad: terminated")
    runs = assert_sound_store(db)
    client, _ = all_runs(f"sqlite:///{db}")
    for run in runs:
        if run.data.params["optimizer.steps"] == "200000":  # interrupted after its start
            assert run.info.status == "KILLED"
            steps = [s for s, _ in history(client, run.info.run_id, "loss")]
            assert steps == sorted(set(steps))  # its steps so far, each once
    follow = subprocess.run([numgrad_script(), f"hydra.run.dir={tmp_path}/last", "optimizer.steps=1"],
                            cwd=tmp_path, env=numgrad_env(), capture_output=True, text=True)  # fmt: skip
    assert follow.returncode == 0, follow.stderr  # and the store goes on working


def test_a_signal_before_hydra_sets_the_run_dir_leaves_nothing_to_remove_and_no_error():
    # Hydra's config is set, its runtime.output_dir not yet: where the test above once met
    # a traceback (MissingMandatoryValue) instead of the signal's one line.
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from numgrad.cli import _remove_hydras_run_dir

    hydra_cfg = OmegaConf.structured(HydraConf)
    hydra_cfg.mode = RunMode.RUN
    assert OmegaConf.is_missing(hydra_cfg.runtime, "output_dir")
    instance = HydraConfig.instance()
    before = instance.cfg
    instance.cfg = OmegaConf.create({"hydra": hydra_cfg})
    try:
        _remove_hydras_run_dir()  # nothing made yet: nothing to do, nothing raised
    finally:
        instance.cfg = before
