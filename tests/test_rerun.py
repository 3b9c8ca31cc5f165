"""``numgrad-rerun``: a logged run repeated bit for bit, and refused when it is not numgrad's own.

Refusals run ``numgrad.rerun.main`` in-process against runs whose artifacts were uploaded
with ``MlflowClient.log_artifact`` (they stop before anything runs). The reruns
themselves run the script in subprocesses, several at once, against a SQLite store and
a real ``mlflow server``. Every check reads the store back.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from numgrad import rerun
from numgrad.tracking.records import plain
from tests.conftest import NUMGRAD, all_runs, experiment_for, numgrad_env
from tests.test_logged_config import compose_cfg

UNKNOWN = "0123456789abcdef0123456789abcdef"
# Until the package is reinstalled, the script is not on PATH: the module is the same code.
RERUN = [shutil.which("numgrad-rerun") or sys.executable]
RERUN += [] if RERUN[0] != sys.executable else ["-m", "numgrad.rerun"]
SYNC = [shutil.which("numgrad-sync") or "numgrad-sync"]
CASES = {
    "default": [],
    "iris": ["data=iris"],
    "blobs": ["data=blobs", "seed=3", "net.shape=[3,4]"],
    # Batches drawn from the seed's generator, after W0: the same draws again.
    "minibatch": ["data=blobs", "seed=4", "data.n_samples=90", "optimizer.batch_size=16"],
    "given": [
        "net.init=given",
        "net.W=[[0.5,-1,2],[0.25,0,-0.75]]",
        "optimizer.steps=40",
        "gradient.dtype=float32",
        "gradient.h=1e-2",
    ],  # float32 too
}


# ------------------------------------------------------- logged runs, by hand


def upload(uri: str, tmp: Path, files: dict[str, object], status: str = "FINISHED") -> str:
    """A run holding ``files`` (path -> YAML data, ndarray or raw bytes); its id."""
    client = MlflowClient(uri)
    exp_id = experiment_for(client, uri)
    run_id = client.create_run(exp_id, run_name="logged").info.run_id
    for path, content in files.items():
        local = tmp / "upload" / path
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, np.ndarray):
            np.save(local, content)
        elif isinstance(content, bytes):
            local.write_bytes(content)
        else:
            local.write_text(yaml.safe_dump(content, sort_keys=False))
        folder = str(Path(path).parent)
        client.log_artifact(run_id, str(local), None if folder == "." else folder)
    shutil.rmtree(tmp / "upload", ignore_errors=True)
    client.set_terminated(run_id, status)
    return run_id


def numgrad_files(*overrides: str) -> dict[str, object]:
    """config.yaml, overrides.yaml and W_final.npy as the sink writes them."""
    cfg = OmegaConf.to_container(compose_cfg(*overrides), resolve=True, enum_to_str=True)
    return {
        "config.yaml": plain(cfg), "overrides.yaml": list(overrides),
        "weights/W_final.npy": np.ones((2, 3)),
    }  # fmt: skip


def refused(tmp_path, monkeypatch, capsys, uri, run_id, *extra) -> str:
    """Run numgrad-rerun in-process; it must exit 2 with one line and leave nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    before = {r.info.run_id for r in all_runs(uri)[1]}
    with pytest.raises(SystemExit) as info:
        rerun.main([run_id, "--uri", uri, *extra])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("numgrad-rerun: error: ")
    assert {r.info.run_id for r in all_runs(uri)[1]} == before  # no new run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # no run dir
    return err.strip().removeprefix("numgrad-rerun: error: ")


def test_rerun_of_a_malformed_id_is_refused(tmp_path, monkeypatch, capsys, store):
    message = refused(tmp_path, monkeypatch, capsys, store, "latest")
    assert message == "invalid run_id='latest': not an MLflow run id (32 hex digits)"


def test_a_missing_run_id_is_the_only_thing_usage_names(capsys):
    with pytest.raises(SystemExit) as info:
        rerun.main([])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "numgrad-rerun: error: the following arguments are required: RUN_ID"
    )  # the overrides are optional


def test_rerun_of_an_unknown_id_is_refused(tmp_path, monkeypatch, capsys, store):
    assert refused(tmp_path, monkeypatch, capsys, store, UNKNOWN) == f"no run {UNKNOWN} in {store}"


@pytest.mark.parametrize(
    ("missing", "status", "message"),
    [
        ("weights/W_final.npy", "FAILED", "has no weights/W_final.npy: it ended FAILED before its end"),
        ("weights/W_final.npy", "RUNNING", "has no weights/W_final.npy: it is RUNNING, not finished"),
        ("config.yaml", "FINISHED", "has no config.yaml (not a numgrad run, or its files were deleted)"),
        ("overrides.yaml", "FINISHED", "has no overrides.yaml (not a numgrad run, or its files were deleted)"),
    ],
)  # fmt: skip
def test_rerun_of_a_run_missing_its_files_is_refused(
    tmp_path, monkeypatch, capsys, store, missing, status, message
):
    files = numgrad_files()
    del files[missing]
    run_id = upload(store, tmp_path, files, status)
    assert refused(tmp_path, monkeypatch, capsys, store, run_id) == f"run {run_id} {message}"


def test_rerun_of_a_deleted_run_is_refused(tmp_path, monkeypatch, capsys, store):
    run_id = upload(store, tmp_path, numgrad_files())
    MlflowClient(store).delete_run(run_id)
    assert refused(tmp_path, monkeypatch, capsys, store, run_id) == (
        f"run {run_id} is deleted in {store}; restore it first "
        f"(mlflow runs restore --run-id {run_id})"
    )


def tampered_run(store, tmp_path, *, config=None, overrides=None, raw=None) -> str:
    files = numgrad_files()
    if config:
        for key, value in config.items():
            node = files["config.yaml"]
            *parents, last = key.split(".")
            for name in parents:
                node = node.setdefault(name, {})
            node[last] = value
    if overrides is not None:
        files["overrides.yaml"] = overrides
    files.update(raw or {})
    return upload(store, tmp_path, files)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"hydra.run.dir": "/tmp/elsewhere"}, "invalid hydra={'run': {'dir': '/tmp/elsewhere'}}: in run {id}'s config.yaml: hydra settings are never taken from a logged run"),
        ({"hydra.callbacks.x._target_": "os.system"}, "invalid hydra={'callbacks': {'x': {'_target_': 'os.system'}}}: in run {id}'s config.yaml: hydra settings are never taken from a logged run"),
        ({"_target_": "os.system"}, "invalid _target_='os.system': in run {id}'s config.yaml: code is never taken from a logged run"),
        ({"optimizer.momentum": 0.9}, "invalid optimizer.momentum=0.9: in run {id}'s config.yaml: not numgrad's own config: never taken from a logged run"),
        ({"tracking.experiment": "${oc.env:HOME}"}, "invalid tracking.experiment='${oc.env:HOME}': in run {id}'s config.yaml: an interpolation never taken from a logged run"),
        ({"optimizer.lr": -1}, "invalid optimizer.lr=-1.0: must be > 0 (in run {id}'s config.yaml)"),
        ({"optimizer.lr": "abc"}, "invalid optimizer.lr='abc': in run {id}'s config.yaml: Value 'abc' of type 'str' could not be converted to Float"),
        ({"net.init": "given"}, "invalid net.W=None: net.init=given needs net.W, a list of rows (in run {id}'s config.yaml)"),
    ],
)  # fmt: skip
def test_rerun_of_a_tampered_config_yaml_is_refused(
    tmp_path, monkeypatch, capsys, store, config, message
):
    run_id = tampered_run(store, tmp_path, config=config)
    assert refused(tmp_path, monkeypatch, capsys, store, run_id) == message.replace("{id}", run_id)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("hydra.run.dir=/tmp/elsewhere", "invalid hydra.run.dir='/tmp/elsewhere': in run {id}'s overrides.yaml: hydra settings are never taken from a logged run"),
        ("hydra/launcher=joblib", "invalid hydra/launcher='joblib': in run {id}'s overrides.yaml: hydra settings are never taken from a logged run"),
        ("+hydra/callbacks=evil", "invalid hydra/callbacks='evil': in run {id}'s overrides.yaml: hydra settings are never taken from a logged run"),
        ("+net._target_=os.system", "invalid net._target_='os.system': in run {id}'s overrides.yaml: code is never taken from a logged run"),
        ("+optimizer.momentum=0.9", "invalid optimizer.momentum='0.9': in run {id}'s overrides.yaml: not numgrad's own config: never taken from a logged run"),
    ],
)  # fmt: skip
def test_rerun_of_a_tampered_overrides_yaml_is_refused(
    tmp_path, monkeypatch, capsys, store, entry, message
):
    run_id = tampered_run(store, tmp_path, overrides=["optimizer.lr=0.1", entry])
    assert refused(tmp_path, monkeypatch, capsys, store, run_id) == message.replace("{id}", run_id)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"a: &x [1, 2]\nb: [*x, *x]\n", "is not plain YAML: an alias (*x)"),
        (b"seed: !!python/object/apply:os.system [id]\n", "is not plain YAML: could not determine a constructor"),
        (b"\xff\xfe", "is not plain YAML: 'utf-8' codec can't decode"),
    ],
)  # fmt: skip
def test_rerun_of_a_config_yaml_that_is_not_plain_yaml_is_refused(
    tmp_path, monkeypatch, capsys, store, content, reason
):
    run_id = tampered_run(store, tmp_path, raw={"config.yaml": content})
    message = refused(tmp_path, monkeypatch, capsys, store, run_id)
    assert message.startswith(f"config.yaml of run {run_id} {reason}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["optimizer.lr=-1"], "invalid optimizer.lr=-1.0: must be > 0"),
        (["optimizer.lr=0.1,0.5"], "Ambiguous value for argument 'optimizer.lr=0.1,0.5'"),
        (["tracking.enabled=false"], "invalid tracking.enabled=False: a rerun is compared through its store"),
        (["tracking.offline=true"], "invalid tracking.offline=True: a rerun is compared through its store"),
    ],
)  # fmt: skip
def test_rerun_with_a_bad_extra_override_is_refused(
    tmp_path, monkeypatch, capsys, store, extra, message
):
    run_id = tampered_run(store, tmp_path)
    assert refused(tmp_path, monkeypatch, capsys, store, run_id, *extra).startswith(message)


# ------------------------------------------------------- whole process, in bulk


def start(cwd: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=cwd, env=numgrad_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, tuple[int, str, str]]:
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=240)
        out[name] = (proc.returncode, stdout, stderr)
    return out


@pytest.fixture(scope="module")
def originals(tmp_path_factory, empty_store) -> tuple[Path, str, dict[str, str]]:
    """Every case run once by ``numgrad`` (all at once) into a SQLite store: dir, URI, ids."""
    path = tmp_path_factory.mktemp("originals")
    (path / "outputs").mkdir()
    shutil.copyfile(empty_store, path / "outputs" / "mlflow.db")
    uri = f"sqlite:///{path / 'outputs' / 'mlflow.db'}"
    procs = {name: start(path, [NUMGRAD, f"hydra.run.dir={path}/orig-{name}", *overrides])
             for name, overrides in CASES.items()}  # fmt: skip
    for name, (code, _, stderr) in finish(procs).items():
        assert code == 0, f"{name}: {stderr}"
    return path, uri, by_case(uri)


def by_case(uri: str) -> dict[str, str]:
    """Case -> id of the original runs in a store (told apart by their overrides)."""
    case = {" ".join(overrides): name for name, overrides in CASES.items()}
    runs = all_runs(uri)[1]
    return {case[r.data.tags["numgrad.overrides"]]: r.info.run_id for r in runs
            if "numgrad.rerun_of" not in r.data.tags}  # fmt: skip


def reruns(path: Path, jobs: dict[str, list[str]]) -> dict[str, tuple[int, str, str]]:
    procs = {name: start(path, [*RERUN, *argv, f"hydra.run.dir={path}/rerun-{name}"])
             for name, argv in jobs.items()}  # fmt: skip
    return finish(procs)


def check_identical(uri: str, run_ids: dict[str, str], results) -> None:
    client = MlflowClient(uri)
    runs = {r.info.run_id: r for r in all_runs(uri)[1]}
    for name, old in run_ids.items():
        code, stdout, stderr = results[name]
        assert code == 0, f"{name}: {stdout}{stderr}"
        assert stdout.splitlines()[-1] == f"numgrad-rerun: W_final is bit-identical to run {old}"
        (new,) = [r for r in runs.values() if r.data.tags.get("numgrad.rerun_of") == old
                  and r.data.tags["numgrad.output_dir"].endswith(f"/rerun-{name}")]  # fmt: skip
        W_old = np.load(client.download_artifacts(old, "weights/W_final.npy"))
        W_new = np.load(client.download_artifacts(new.info.run_id, "weights/W_final.npy"))
        assert W_new.dtype == W_old.dtype and W_new.tobytes() == W_old.tobytes()
        params = dict(runs[old].data.params, rerun_of=old)
        params["tracking.uri"] = new.data.params["tracking.uri"]  # --uri, for the server
        assert new.data.params == params  # the same experiment, every key
        assert new.info.run_name == runs[old].info.run_name


@pytest.mark.slow
def test_cli_rerun_is_bit_identical_on_sqlite(originals):
    path, uri, ids = originals
    jobs = {name: [run_id] for name, run_id in ids.items()}  # the default store, from cwd
    jobs["lr"] = [ids["default"], "optimizer.lr=0.5"]
    # values in overrides.yaml are never used (config.yaml has them): a tampered one is harmless
    tampered = path / "overrides.yaml"
    tampered.write_text(yaml.safe_dump(["optimizer.lr=-1", "data.path=${oc.env:HOME}"]))
    MlflowClient(uri).log_artifact(ids["iris"], str(tampered))
    # a run numgrad itself refuses here (its data file is not in this directory)
    jobs["gone"] = [upload(uri, path, numgrad_files("data=file", "data.path=gone.csv"))]
    results = reruns(path, jobs)
    check_identical(uri, ids, results)
    code, stdout, _ = results["lr"]
    last = stdout.splitlines()[-1]
    assert code == 0 and re.fullmatch(
        rf"numgrad-rerun: W_final differs from run {ids['default']}: max \|ΔW\| = \S+ "
        r"\(extra overrides: optimizer.lr=0.5\)",
        last,
    ), last
    code, stdout, stderr = results["gone"]
    refusal = "numgrad-rerun: error: invalid data.path='gone.csv': no such file\n"
    assert (code, stderr) == (2, refusal)
    assert not (path / "rerun-gone").exists()
    assert len(all_runs(uri)[1]) == len(ids) + len(jobs)  # originals, gone, 5 reruns


@pytest.mark.slow
def test_cli_rerun_is_bit_identical_on_a_tracking_server(originals, mlflow_server):
    path, _, _ = originals
    uri = mlflow_server.uri
    # The same runs, copied into the server by numgrad-sync: one process instead of four.
    argv = [*SYNC, "--uri", uri, *(str(path / f"orig-{name}") for name in CASES)]
    sync = subprocess.run(argv, cwd=path, env=numgrad_env(), capture_output=True, text=True)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    ids = by_case(uri)
    results = reruns(path, {name: [run_id, "--uri", uri] for name, run_id in ids.items()})
    check_identical(uri, ids, results)


@pytest.mark.slow
def test_a_rerun_whose_data_file_changed_names_the_dataset_digests(tmp_path, store):
    data = tmp_path / "points.csv"
    data.write_text("0.6,0.9,0\n0.2,0.1,1\n0.9,0.3,2\n")
    argv = [NUMGRAD, "data=file", "data.path=points.csv", "net.shape=[2,3]",
            f"hydra.run.dir={tmp_path}/orig"]  # fmt: skip
    first = subprocess.run(argv, cwd=tmp_path, env=numgrad_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    (original,) = all_runs(store)[1]
    data.write_text("0.6,0.9,0\n0.2,0.1,1\n0.9,0.4,2\n")  # one value moved: another dataset
    (code, stdout, _) = finish({"r": start(tmp_path, [*RERUN, original.info.run_id])})["r"]
    (new,) = [r for r in all_runs(store)[1] if r.info.run_id != original.info.run_id]
    old_digest, new_digest = (r.inputs.dataset_inputs[0].dataset.digest for r in (original, new))
    assert old_digest != new_digest
    assert code == 1 and stdout.splitlines()[-1] == (
        f"numgrad-rerun: W_final differs from run {original.info.run_id}: max |ΔW| = "
        f"{_max_delta(store, original.info.run_id, new.info.run_id)} (the training data "
        f"changed: dataset digest {new_digest}, was {old_digest}) (no extra overrides that "
        "change the experiment: not reproduced)"
    )


def _max_delta(uri: str, old: str, new: str) -> str:
    client = MlflowClient(uri)
    W_old, W_new = (
        np.load(client.download_artifacts(i, "weights/W_final.npy")) for i in (old, new)
    )
    return f"{np.max(np.abs(W_new - W_old)):.2g}"
