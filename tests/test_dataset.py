"""The training data as an MLflow dataset input (numgrad.tracking.dataset).

The record is built without mlflow; here it is compared with what
``mlflow.data.from_numpy`` makes of the same arrays, and read back from the store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.numpy_dataset import from_numpy
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from numgrad.data import SOURCES, load_data
from numgrad.data.iris import Scaling
from numgrad.tracking.dataset import dataset_name, dataset_record, dataset_source, digest
from tests.test_sink import article_descent, run_tracked

IRIS = Path(__file__).resolve().parents[1] / "src" / "numgrad" / "data" / "iris.csv"


def data(**fields) -> OmegaConf:
    return OmegaConf.structured(SOURCES[fields.pop("name", "article")].Schema(**fields))


def test_names_say_which_data():
    assert dataset_name(data(x=[0.6, 0.9], t=[0, 0, 1]), seed=0) == "article"
    assert dataset_name(data(x=[[0.6, 0.9], [0.1, 0.4]], t=[2, 0]), seed=0) == "article(custom)"
    assert dataset_name(data(x=[0.6, 0.8], t=[0, 0, 1]), seed=0) == "article(custom)"
    assert dataset_name(data(name="blobs"), seed=7) == "blobs(seed=7,n=60)"
    assert dataset_name(data(name="blobs", n_samples=9, spread=0.5), seed=1) == (
        "blobs(seed=1,n=9,spread=0.5)"
    )
    assert dataset_name(data(name="iris"), seed=0) == "iris"
    assert dataset_name(data(name="iris", scaling=Scaling.zscore), seed=0) == "iris(zscore)"
    assert dataset_name(data(name="file", path="/d/my data.npz"), seed=0) == "my data.npz"


def test_sources():
    assert dataset_source(data(name="iris")).resolve() == IRIS
    assert dataset_source(data(name="file", path="rel/x.csv")) == Path.cwd() / "rel/x.csv"
    assert dataset_source(data(name="blobs")) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_record_matches_what_mlflow_writes_for_the_same_arrays(dtype):
    cfg = data(name="iris")
    x, t = load_data(cfg, [4, 3], np.random.default_rng(0))
    x = x.astype(dtype)
    ours = dataset_record(x, t, name="iris", source=IRIS)
    source = get_dataset_source_from_json(json.dumps({"uri": str(IRIS)}), source_type="local")
    theirs = from_numpy(x, source=source, targets=t, name="iris")._to_mlflow_entity()
    for key in ("name", "source_type", "source", "schema", "profile"):
        assert ours[key] == getattr(theirs, key), key
    made_in_code = dataset_record(x, t, name="blobs(seed=7,n=60)", source=None)
    code = CodeDatasetSource(
        tags={"mlflow.source.name": "numgrad", "numgrad.data": made_in_code["name"]}
    )
    theirs = from_numpy(x, source=code, targets=t, name=made_in_code["name"])._to_mlflow_entity()
    assert (made_in_code["source_type"], made_in_code["source"]) == (
        theirs.source_type,
        theirs.source,
    )


def test_digest_is_stable_and_sees_every_value():
    x = np.random.default_rng(0).normal(size=(20_000, 2))  # more than MLflow's 10,000 values
    t = np.arange(20_000) % 3
    first = digest(x, t)
    assert len(first) == 8 and first == digest(x.copy(), t.copy())
    assert first == digest(np.asfortranarray(x), t)  # the values count, not the memory layout
    changed = x.copy()
    changed[-1, -1] += 1e-12
    assert digest(changed, t) != first
    assert digest(x.astype(np.float32), t) != first  # another dtype, other data
    assert digest(x[:, :1], t) != digest(x[:, 1:], t)


def test_a_run_has_its_dataset_input_once(tmp_path, store):
    descent = article_descent(3)
    sink = run_tracked(store, tmp_path / "run", descent)
    run = MlflowClient(store).get_run(sink.run_id)
    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == "article"
    assert given.dataset.digest == digest(descent.x, descent.labels)
    assert given.dataset.source_type == "code"
    assert json.loads(given.dataset.source)["tags"]["numgrad.data"] == "article"
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "training"}
    assert json.loads(given.dataset.profile)["features_shape"] == [1, 2]
    # The same data in a second run: the same dataset (name and digest), one input each.
    other = run_tracked(store, tmp_path / "run2", article_descent(2))
    (again,) = MlflowClient(store).get_run(other.run_id).inputs.dataset_inputs
    assert (again.dataset.name, again.dataset.digest) == (given.dataset.name, given.dataset.digest)
