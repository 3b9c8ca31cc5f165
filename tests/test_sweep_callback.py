"""The sweep's Hydra callback in-process: parent run, job environment, end (numgrad.sweep.callback)."""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

from numgrad.config import register_configs
from numgrad.sweep import callback as callbacks
from numgrad.tracking.provenance import PARENT_RUN_ENV, SENDER_ENV


def compose(tmp_path: Path, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from numgrad.cli import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(
            "config",
            overrides=[f"hydra.sweep.dir={tmp_path}/multirun", *overrides],
            return_hydra_config=True,
        )
    return cfg


def test_ray_launcher_gets_the_parent_id_and_a_local_store_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(tmp_path, "hydra/launcher=ray", f"tracking.uri={uri}")
    callbacks.SweepCallback().on_multirun_start(cfg)
    try:
        err = capsys.readouterr().err
        ours = [line for line in err.splitlines() if line.startswith("numgrad:")]
        assert len(ours) == 1 and "hydra/launcher=ray with the local store" in ours[0]
        parent_id = os.environ[PARENT_RUN_ENV]
        # The launcher is instantiated from this very config after on_multirun_start.
        from hydra.utils import instantiate

        launcher = instantiate(cfg.hydra.launcher)
        env_vars = launcher.ray_cfg.init.runtime_env.env_vars
        assert env_vars[PARENT_RUN_ENV] == parent_id
        assert "MLFLOW_TRACKING_URI" not in env_vars  # tracking.uri is set in the config itself
    finally:
        outcome = callbacks.end_sweep()
    assert PARENT_RUN_ENV not in os.environ
    assert outcome.status == "FINISHED" and outcome.rows == []
    assert MlflowClient(uri).get_run(parent_id).info.status == "FINISHED"


def test_end_sweep_runs_once_and_ctrl_c_kills_the_parent(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(tmp_path, f"tracking.uri={uri}", "optimizer.lr=0.2")
    callbacks.SweepCallback().on_multirun_start(cfg)
    # Jobs here only journal: the sweep's sender sends them, and makes the parent run
    # (at once for a new store, made before any job runs).
    assert os.environ[SENDER_ENV] == uri
    outcome = callbacks.end_sweep(KeyboardInterrupt())
    assert outcome.status == "KILLED"
    parent_id = outcome.parent_run_id
    assert SENDER_ENV not in os.environ
    assert callbacks.end_sweep(ValueError("later")) is outcome  # idempotent
    callbacks.SweepCallback().on_multirun_end(cfg)
    client = MlflowClient(uri)
    run = client.get_run(parent_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.info.run_name.startswith("sweep ") and "lr=0.2" in run.info.run_name
    assert "sweep KILLED" in capsys.readouterr().err
