"""``net.init=run net.from_run=<id>``: W0 is a logged run's W_final, read from its store.

Refusals go through the runner in-process (fast); the happy path and one refusal run
the installed ``numgrad`` in a subprocess. Every check reads the store back.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from numgrad.cli import CONFIG_DIR
from numgrad.config import ConfigError, register_configs, validate
from numgrad.runner import execute
from tests.conftest import all_runs, experiment_for, free_port, history

UNKNOWN = "0123456789abcdef0123456789abcdef"


def compose_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def logged(uri: str, W: np.ndarray | None, status: str = "FINISHED") -> str:
    """A run as numgrad leaves it (weights/W_final.npy unless it ended early); its id."""
    client = MlflowClient(uri)
    exp_id = experiment_for(client, uri)
    run_id = client.create_run(exp_id, run_name="logged").info.run_id
    if W is not None:
        path = Path(uri.removeprefix("sqlite:///")).parent / "W_final.npy"
        np.save(path, W)
        client.log_artifact(run_id, str(path), "weights")
    client.set_terminated(run_id, status)
    return run_id


def run_ids(uri: str) -> set[str]:
    return {run.info.run_id for run in all_runs(uri)[1]}


# ------------------------------------------------------------------ the schema


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["net.init=run"], "invalid net.from_run=None: net.init=run needs net.from_run=<run id>"),
        ([f"net.from_run={UNKNOWN}"], "invalid net.init='normal': net.from_run is given; set net.init=run"),
        (["net.init=run", "net.from_run=latest"],
         "invalid net.from_run='latest': not an MLflow run id (32 hex digits)"),
        (["net.init=run", f"net.from_run={UNKNOWN.upper()}"],
         f"invalid net.from_run='{UNKNOWN.upper()}': not an MLflow run id (32 hex digits)"),
    ],
)  # fmt: skip
def test_warm_start_settings_are_validated_before_any_store_is_asked(overrides, message):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(*overrides))
    assert str(info.value) == message


# ----------------------------------------------------------- refusals, in-process


def refusal(tmp_path, uri: str, run_id: str, *overrides: str) -> str:
    cfg = compose_cfg("net.init=run", f"net.from_run={run_id}", f"tracking.uri={uri}", *overrides)
    with pytest.raises(ConfigError) as info:
        execute(cfg, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written
    return str(info.value)


def test_warm_start_from_an_unknown_run_is_refused(tmp_path, store):
    message = refusal(tmp_path, store, UNKNOWN)
    assert message == f"invalid net.from_run='{UNKNOWN}': no run {UNKNOWN} in {store}"
    assert run_ids(store) == set()


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_warm_start_from_a_run_without_w_final_is_refused(tmp_path, store, status):
    run_id = logged(store, None, status)
    message = refusal(tmp_path, store, run_id)
    assert message == (
        f"invalid net.from_run='{run_id}': run {run_id} has no weights/W_final.npy: "
        f"it ended {status} before its end"
    )
    assert run_ids(store) == {run_id}


def test_warm_start_from_a_deleted_run_is_refused(tmp_path, store):
    """Refused, not gone on with a warning: a deleted run's files may vanish any moment."""
    run_id = logged(store, np.ones((2, 3)))
    MlflowClient(store).delete_run(run_id)
    assert refusal(tmp_path, store, run_id) == (
        f"invalid net.from_run='{run_id}': run {run_id} is deleted in {store}; restore it "
        f"first (mlflow runs restore --run-id {run_id})"
    )
    assert run_ids(store) == set()  # still deleted, nothing new


def test_warm_start_from_a_sweeps_parent_says_to_use_a_child(tmp_path, store):
    run_id = logged(store, None)
    MlflowClient(store).set_tag(run_id, "numgrad.kind", "sweep")  # as a sweep's parent is
    assert refusal(tmp_path, store, run_id) == (
        f"invalid net.from_run='{run_id}': run {run_id} has no weights/W_final.npy: "
        "it is a sweep's parent run; use one of its children"
    )


def test_warm_start_with_another_shape_is_refused(tmp_path, store):
    run_id = logged(store, np.ones((4, 3)))
    message = refusal(tmp_path, store, run_id)
    assert message == (
        f"invalid net.from_run='{run_id}': its W_final has shape [4, 3], net.shape is [2, 3]"
    )
    assert run_ids(store) == {run_id}


def test_warm_start_from_a_w_final_that_is_not_a_float_matrix_is_refused(tmp_path, store):
    run_id = logged(store, np.arange(6).reshape(2, 3))
    message = refusal(tmp_path, store, run_id)
    assert message.endswith("is not a float matrix: int64 array of shape [2, 3]")


def test_warm_start_from_a_store_that_does_not_exist_creates_none(tmp_path):
    db = tmp_path / "nowhere" / "mlflow.db"
    message = refusal(tmp_path, f"sqlite:///{db}", UNKNOWN)
    assert message == (
        f"invalid net.from_run='{UNKNOWN}': no MLflow store at {db} (tracking URI sqlite:///{db})"
    )
    assert not db.parent.exists()


def test_warm_start_from_an_unreachable_server_is_one_line(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    message = refusal(tmp_path, uri, UNKNOWN)
    assert message == f"invalid net.from_run='{UNKNOWN}': tracking server {uri} is not reachable"


# ------------------------------------------------------------ dtype, untracked


def test_warm_start_casts_a_float32_w_final_to_the_runs_dtype(tmp_path, store):
    W32 = np.array([[0.1, -0.2, 0.3], [1.5, 2.5, -3.25]], dtype=np.float32)
    run_id = logged(store, W32)
    cfg = compose_cfg(
        "net.init=run", f"net.from_run={run_id}", f"tracking.uri={store}", "optimizer.steps=2"
    )
    outcome = execute(cfg, output_dir=tmp_path / "run")
    client = MlflowClient(store)
    W0 = np.load(client.download_artifacts(outcome.run_id, "weights/W_init.npy", str(tmp_path)))
    assert W0.dtype == np.float64 and W0.tobytes() == W32.astype(np.float64).tobytes()
    run = client.get_run(outcome.run_id)
    assert run.data.tags["numgrad.warm_start_from"] == run_id
    assert run.data.params["net.init"] == "run" and run.data.params["net.from_run"] == run_id


def test_untracked_warm_start_still_reads_the_store(tmp_path, store):
    W = np.array([[0.5, -0.5, 0.0], [0.25, 0.0, -0.25]])
    run_id = logged(store, W)
    cfg = compose_cfg(
        "net.init=run", f"net.from_run={run_id}", f"tracking.uri={store}",
        "tracking.enabled=false", "optimizer.steps=0",
    )  # fmt: skip
    outcome = execute(cfg)
    assert outcome.run_id is None and run_ids(store) == {run_id}


# ------------------------------------------------------------ whole process


@pytest.mark.slow
def test_cli_warm_start_continues_from_the_logged_run(workdir, store):
    workdir.run("optimizer.steps=30", "tracking.run_name=first")
    client, (first,) = all_runs(workdir.uri)
    old = first.info.run_id
    proc = workdir.run(
        "net.init=run", f"net.from_run={old}", "optimizer.steps=10", "tracking.run_name=second"
    )
    new = next(r for r in all_runs(workdir.uri)[1] if r.info.run_id != old)
    W_final = np.load(client.download_artifacts(old, "weights/W_final.npy"))
    W_init = np.load(client.download_artifacts(new.info.run_id, "weights/W_init.npy"))
    assert W_init.tobytes() == W_final.tobytes()  # bit for bit
    assert new.data.tags["numgrad.warm_start_from"] == old
    assert new.data.params["net.from_run"] == old
    old_loss, new_loss = history(client, old, "loss"), history(client, new.info.run_id, "loss")
    assert new_loss[0] == (0, first.data.metrics["final_loss"])  # it goes on where it stopped
    assert new_loss[-1][1] < old_loss[-1][1] < old_loss[0][1]
    assert re.search(rf"mlflow: run {new.info.run_id} \(second\)", proc.stdout)


@pytest.mark.slow
def test_cli_warm_start_from_an_unknown_run_leaves_nothing(workdir, store):
    proc = workdir.run("net.init=run", f"net.from_run={UNKNOWN}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"numgrad: error: invalid net.from_run='{UNKNOWN}': no run {UNKNOWN} in {store}"
    )
    assert not (workdir.path / "run").exists() and run_ids(store) == set()
