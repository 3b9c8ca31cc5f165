"""The final SimpleNet as an MLflow 3 logged model (numgrad.tracking.model).

In-process runs through the sink, and (slow) a real ``mlflow models serve``. The model
is found with ``search_logged_models`` and loaded with ``mlflow.pyfunc.load_model``;
its predictions are compared with numgrad's own ``softmax(SimpleNet(W).predict(x))``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import mlflow.pyfunc
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from numgrad.descent import Descent
from numgrad.functions import softmax
from numgrad.gradient import vectorized_gradient
from numgrad.net import SimpleNet
from numgrad.tracking import pyfunc_folder
from numgrad.tracking.journal import JOURNAL_FILE, Journal, read_journal
from numgrad.tracking.mlflow_store import MlflowStore
from numgrad.tracking.model import KEY_TAG, model_record
from numgrad.tracking.pyfunc_folder import save_pyfunc
from numgrad.tracking.uploader import Uploader
from numgrad.ui import stop
from tests.conftest import answers, free_port, numgrad_env, wait_for
from tests.test_sink import article_descent, open_run, run_tracked


def blobs_descent(steps: int = 20) -> Descent:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)) + np.repeat(3 * np.eye(3, 4), 10, axis=0)
    labels = np.repeat(np.arange(3), 10)
    return Descent(rng.normal(size=(4, 3)), x, labels, vectorized_gradient, h=1e-4, lr=0.5,
                   steps=steps)  # fmt: skip


def probabilities(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    return softmax(SimpleNet(W).predict(x))


def the_model(uri: str, run_id: str):
    client = MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models(experiment_ids=[experiment])
    return [m for m in models if m.source_run_id == run_id]


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    """A URI-less MLflow call would create ./mlflow.db: let it be in tmp, never the repo."""
    monkeypatch.chdir(tmp_path)


def test_a_finished_run_logs_its_net_as_a_pyfunc_model(tmp_path, store, monkeypatch, in_tmp_cwd):
    descent = blobs_descent()
    sink = run_tracked(store, tmp_path / "run", descent)
    client = MlflowClient(store)
    (model,) = the_model(store, sink.run_id)
    assert model.name == "simplenet" and model.status.name == "READY"
    assert model.params == {"n_inputs": "4", "n_classes": "3", "dtype": "float64"}
    assert model.tags[KEY_TAG].startswith(sink.run_id + ":")
    assert model.tags["mlflow.source.name"] == "numgrad"  # the Models tab's "Logged from"
    run = client.get_run(sink.run_id)
    assert [(o.model_id, o.step) for o in run.outputs.model_outputs] == [(model.model_id, 20)]
    # The model holds the run's final metrics, evaluated on the run's dataset ...
    (given,) = run.inputs.dataset_inputs
    linked = {m.key: (m.value, m.step, m.dataset_name, m.dataset_digest) for m in model.metrics}
    assert linked == {
        key: (run.data.metrics[key], 0, given.dataset.name, given.dataset.digest)
        for key in ("final_loss", "final_accuracy", "steps_taken")
    }
    # ... and the run keeps one value of each.
    assert len(client.get_metric_history(sink.run_id, "final_loss")) == 1

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # models:/ resolves through the store
    loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    W = np.load(client.download_artifacts(sink.run_id, "weights/W_final.npy"))
    np.testing.assert_allclose(loaded.predict(descent.x), probabilities(W, descent.x), rtol=0,
                               atol=1e-12)  # fmt: skip
    signature = loaded.metadata.signature
    assert json.loads(signature.inputs.to_json()) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}
    ]
    assert json.loads(signature.outputs.to_json())[0]["tensor-spec"]["shape"] == [-1, 3]
    info = mlflow.pyfunc.get_model_dependencies(f"models:/{model.model_id}")
    assert Path(info).read_text().split() == [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
    ]  # pinned as given, nothing inferred
    example = json.loads(Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{model.artifact_location}/input_example.json", dst_path=str(tmp_path),
    )).read_text())  # fmt: skip
    assert np.array_equal(np.asarray(example), descent.x[:3])
    assert not (tmp_path / "mlflow.db").exists()


def upload_again(store: str, path: Path, *, forget_acks: bool = False) -> None:
    """Upload a journal as its owner; ``forget_acks``: as if no acknowledgement had reached
    it (a crash between a send and its ack), so that everything is sent again."""
    if forget_acks:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if '"kind":"ack"' not in line))
    journal, _ = Journal.reopen(path)
    try:
        Uploader(MlflowStore(store).open(), read_journal(path), journal=journal).upload()
    finally:
        journal.close()


def test_sending_the_journal_again_makes_no_second_model_nor_input(tmp_path, store, in_tmp_cwd):
    run_dir = tmp_path / "run"
    sink = run_tracked(store, run_dir, blobs_descent(5))
    client = MlflowClient(store)
    (model,) = the_model(store, sink.run_id)
    for _ in range(2):  # a crash between send and ack, then a second sync
        upload_again(store, run_dir / JOURNAL_FILE, forget_acks=True)
    assert [m.model_id for m in the_model(store, sink.run_id)] == [model.model_id]
    run = client.get_run(sink.run_id)
    assert len(run.outputs.model_outputs) == 1 and len(run.inputs.dataset_inputs) == 1
    assert len(client.get_logged_model(model.model_id).metrics) == 3
    assert len(client.get_metric_history(sink.run_id, "final_loss")) == 1


def test_a_model_left_pending_by_an_interrupted_send_is_completed(tmp_path, store, in_tmp_cwd):
    run_dir = tmp_path / "run"
    sink = run_tracked(store, run_dir, article_descent(3), log_model=False)
    assert the_model(store, sink.run_id) == []
    # What a send cut short after create_logged_model leaves: a PENDING model with the key.
    view = read_journal(run_dir / JOURNAL_FILE)
    record = model_record(
        "artifacts/weights/W_final.npy", step=3, example=None, metrics=[], dataset=None, tags={},
    )  # fmt: skip
    journal, _ = Journal.reopen(run_dir / JOURNAL_FILE)
    entry = journal.append("model", **record)
    journal.close()
    assert entry["seq"] == view.last_seq + 1
    client = MlflowClient(store)
    experiment = client.get_run(sink.run_id).info.experiment_id
    pending = client.create_logged_model(experiment, source_run_id=sink.run_id,
                                         tags={KEY_TAG: f"{sink.run_id}:{entry['seq']}"})  # fmt: skip
    upload_again(store, run_dir / JOURNAL_FILE)
    (model,) = the_model(store, sink.run_id)
    assert model.model_id == pending.model_id and model.status.name == "READY"
    assert [o.model_id for o in client.get_run(sink.run_id).outputs.model_outputs] == [
        pending.model_id
    ]


def test_log_model_false_logs_no_model_and_writes_no_model_files(tmp_path, store):
    run_dir = tmp_path / "run"
    sink = run_tracked(store, run_dir, article_descent(3), log_model=False)
    assert the_model(store, sink.run_id) == []
    assert "model" not in {e["kind"] for e in read_journal(run_dir / JOURNAL_FILE).entries}
    assert not (tmp_path / "outputs" / "mlartifacts" / "models").exists()
    assert MlflowClient(store).get_run(sink.run_id).inputs.dataset_inputs  # the data still


def test_a_failed_run_logs_no_model(tmp_path, store):
    descent = article_descent(10)
    sink = open_run(store, tmp_path / "run", 10)
    with pytest.raises(ValueError), sink:
        sink.log_start(descent.W)
        for record in descent:
            sink.log_step(record)
            if record.step == 3:
                raise ValueError("boom")
    assert the_model(store, sink.run_id) == []


def test_a_float32_net_gives_a_float32_model(tmp_path, in_tmp_cwd):
    W = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    x = np.array([[0.6, 0.9], [-1.0, 2.0]], dtype=np.float32)
    entry = model_record("W.npy", step=0, example=x, metrics=[], dataset=None, tags={})
    fake = SimpleNamespace(artifact_location=str(tmp_path), model_id="m-test")
    path = save_pyfunc(tmp_path / "model", W, entry, fake, run_id="r")
    loaded = mlflow.pyfunc.load_model(str(path))
    assert json.loads(loaded.metadata.signature.inputs.to_json())[0]["tensor-spec"]["dtype"] == (
        "float32"
    )
    got = loaded.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, softmax(x @ W))


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_nets_probabilities(tmp_path, store, in_tmp_cwd):
    descent = blobs_descent()
    sink = run_tracked(store, tmp_path / "run", descent)
    (model,) = the_model(store, sink.run_id)
    W = np.load(MlflowClient(store).download_artifacts(sink.run_id, "weights/W_final.npy"))
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{model.model_id}",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=numgrad_env(MLFLOW_TRACKING_URI=store),
                                start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/ping") or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        request = urllib.request.Request(
            f"{base}/invocations", data=json.dumps({"inputs": descent.x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = np.asarray(json.loads(answer.read())["predictions"])
    finally:
        stop(proc)
    np.testing.assert_allclose(predictions, probabilities(W, descent.x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_later_model_of_the_same_kind_is_what_mlflow_would_save(tmp_path, dtype, monkeypatch):
    """The first model of a kind is saved by MLflow, later ones are copied from it
    (pyfunc_folder._TEMPLATES): file for file what MLflow saves, but their own W and ids."""
    monkeypatch.setattr(pyfunc_folder, "_TEMPLATES", {})
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2))
    entry = model_record("W.npy", step=4, example=x, metrics=[], dataset=None, tags={})
    W1, W2 = (rng.normal(size=(2, 3)).astype(dtype) for _ in range(2))

    def save(name, W, model_id, run_id):
        fake = SimpleNamespace(artifact_location=f"file:///store/{model_id}", model_id=model_id)
        (tmp_path / name).mkdir()
        return save_pyfunc(tmp_path / name / "model", W, entry, fake, run_id=run_id)

    save("first", W1, "m-1", "r-1")
    copied = save("copied", W2, "m-2", "r-2")
    assert len(pyfunc_folder._TEMPLATES) == 1
    pyfunc_folder._TEMPLATES.clear()
    fresh = save("fresh", W2, "m-2", "r-2")  # what MLflow itself writes for this model

    def mlmodel(path):
        d = yaml.safe_load((path / "MLmodel").read_text())
        del d["utc_time_created"]  # when it was written
        del d["flavors"]["python_function"]["artifacts"]["W"]["uri"]  # a temporary source
        return d

    assert mlmodel(copied) == mlmodel(fresh)
    assert mlmodel(copied)["run_id"] == "r-2" and mlmodel(copied)["model_id"] == "m-2"
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert sorted(p.relative_to(copied) for p in copied.rglob("*") if p.is_file()) == files
    for name in files:
        if name != Path("MLmodel"):
            assert (copied / name).read_bytes() == (fresh / name).read_bytes(), name
    loaded = mlflow.pyfunc.load_model(str(copied))
    np.testing.assert_array_equal(loaded.predict(x.astype(dtype)), softmax(x.astype(dtype) @ W2))
    assert loaded.metadata.run_id == "r-2"


def test_a_model_of_another_kind_is_saved_by_mlflow_again(tmp_path, monkeypatch):
    monkeypatch.setattr(pyfunc_folder, "_TEMPLATES", {})
    x = np.ones((1, 2))
    entry = model_record("W.npy", step=0, example=x, metrics=[], dataset=None, tags={})
    for i, W in enumerate([np.ones((2, 3)), np.ones((2, 4)), np.ones((2, 3), np.float32)]):
        fake = SimpleNamespace(artifact_location=str(tmp_path), model_id=f"m-{i}")
        (tmp_path / str(i)).mkdir()
        path = save_pyfunc(tmp_path / str(i) / "model", W, entry, fake, run_id="r")
        got = mlflow.pyfunc.load_model(str(path)).predict(x.astype(W.dtype))
        assert got.shape == (1, W.shape[1]) and got.dtype == W.dtype
    assert len(pyfunc_folder._TEMPLATES) == 3


@pytest.mark.parametrize("numpy_pin, scanned", [
    (f"numpy=={np.__version__}", False),  # this process's: the check cannot warn
    ("numpy==1.0.0", True),  # a journal's from another environment: MLflow says it differs
])  # fmt: skip
def test_mlflows_requirement_check_runs_only_for_requirements_of_another_process(
    tmp_path, monkeypatch, numpy_pin, scanned
):
    """pyfunc_folder._no_requirement_scan swaps one private name of MLflow's; when MLflow moves
    it, this fails and says which MLflow did."""
    import mlflow.utils.environment as environment
    import mlflow.utils.requirements_utils as requirements_utils

    mlflow_is = f"MLflow {mlflow.__version__}"
    name = pyfunc_folder._REQUIREMENT_CHECK
    original = getattr(environment, name, None)
    assert original is not None, f"{mlflow_is} has no mlflow.utils.environment.{name}"
    checked = []
    real = requirements_utils._check_requirement_satisfied
    monkeypatch.setattr(requirements_utils, "_check_requirement_satisfied",
                        lambda req: checked.append(req) or real(req))  # fmt: skip
    monkeypatch.setattr(pyfunc_folder, "_TEMPLATES", {})
    entry = model_record("W.npy", step=0, example=None, metrics=[], dataset=None, tags={})
    entry["requirements"] = [numpy_pin]
    fake = SimpleNamespace(artifact_location=str(tmp_path), model_id="m-1")
    path = save_pyfunc(tmp_path / "model", np.ones((2, 3)), entry, fake, run_id="r")
    assert bool(checked) == scanned, f"{mlflow_is} checked {checked} (expected: {scanned})"
    assert getattr(environment, name) is original  # swapped back
    requirements = (path / "requirements.txt").read_text().split()
    assert requirements == [f"mlflow=={mlflow.__version__}", numpy_pin]


def test_figures_false_draws_no_figure_and_the_run_is_whole(tmp_path, store):
    drawn = run_tracked(store, tmp_path / "drawn", article_descent(3))
    run_dir = tmp_path / "run"
    sink = run_tracked(store, run_dir, article_descent(3), figures=False)
    assert sorted(p.name for p in (tmp_path / "drawn" / "artifacts" / "figures").iterdir()) == [
        "grad_norm.png", "loss.png", "weights.png",
    ]  # fmt: skip
    assert not (run_dir / "artifacts" / "figures").exists()
    client = MlflowClient(store)
    listed = {f.path for f in client.list_artifacts(sink.run_id)}
    assert "figures" in {f.path for f in client.list_artifacts(drawn.run_id)}
    assert "figures" not in listed and "weights" in listed and "history.csv" in listed
    run = client.get_run(sink.run_id)
    assert (
        run.info.status == "FINISHED" and len(client.get_metric_history(sink.run_id, "loss")) == 4
    )
    assert the_model(store, sink.run_id)  # the model still
