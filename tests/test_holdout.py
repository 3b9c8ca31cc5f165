"""The held-out split (numgrad.data.holdout), its evaluation, and what a run records of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from numgrad.config import ConfigError
from numgrad.data import load_data, split
from numgrad.data.holdout import held_out
from numgrad.data.iris import IrisData
from numgrad.evaluation import Evaluation
from tests.conftest import all_runs, history


def book_loss(W, x, labels):
    """The book's cross-entropy of softmax(x @ W), written out sample by sample."""
    total = 0.0
    for row, label in zip(x, labels, strict=True):
        z = row @ W
        y = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        total += -np.log(y[label] + 1e-7)
    return total / len(x)


def test_each_class_gives_its_share_rounded_half_up_and_the_parts_keep_their_order():
    labels = np.repeat([0, 1, 2], [50, 45, 5])  # 10, 9 and 1 held out at 0.2
    rng = np.random.default_rng(3)
    mask = held_out(labels, 0.2, rng)
    assert np.bincount(labels[mask]).tolist() == [10, 9, 1]
    assert held_out(np.repeat([0, 1], [5, 3]), 0.5, np.random.default_rng(0)).sum() == 3 + 2
    x = np.arange(100.0)[:, None]
    train, test = split(x, labels, 0.2, np.random.default_rng(3))
    assert np.array_equal(test[0].ravel(), np.flatnonzero(mask))  # original order
    assert sorted([*train[0].ravel(), *test[0].ravel()]) == list(range(100))
    assert np.array_equal(train[1], labels[~mask]) and np.array_equal(test[1], labels[mask])


def test_the_split_follows_the_seed():
    labels = np.repeat([0, 1, 2], 50)
    a, b, c = (held_out(labels, 0.2, np.random.default_rng(s)) for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_no_held_out_part_draws_nothing_from_the_generator():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    train, test = split(np.ones((4, 2)), np.array([0, 1, 0, 1]), 0.0, rng)
    assert test is None and train[0].shape == (4, 2) and rng.bit_generator.state == before


@pytest.mark.parametrize(
    ("fraction", "labels", "message"),
    [
        (0.2, [0, 1, 2], r"^invalid data.test_fraction=0.2: holds out no sample of 3 "),
        (0.9, [0, 1, 2], r"^invalid data.test_fraction=0.9: holds out all 3 samples: none to "),
    ],
)
def test_a_split_that_leaves_a_part_empty_is_refused(fraction, labels, message):
    with pytest.raises(ConfigError, match=message):
        held_out(np.array(labels), fraction, np.random.default_rng(0))


def test_evaluation_is_the_book_loss_and_the_argmax_accuracy_of_each_set():
    rng = np.random.default_rng(1)
    W, x, labels = rng.standard_normal((4, 3)), rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    got = Evaluation({"test": (x, labels)}, W)(W)
    assert got["test_loss"] == pytest.approx(book_loss(W, x, labels), rel=1e-12)
    assert got["test_accuracy"] == np.mean(
        [np.argmax(r @ W) == k for r, k in zip(x, labels, strict=True)]
    )
    assert Evaluation({}, W)(W) == {} and not Evaluation({}, W)


@pytest.mark.slow
def test_an_iris_run_records_training_and_held_out_parts(workdir):
    proc = workdir.run("data=iris", "optimizer.steps=20", "tracking.log_every=5")
    client, (run,) = all_runs(workdir.uri)
    rid = run.info.run_id
    inputs = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: d.dataset
        for d in run.inputs.dataset_inputs
    }
    assert sorted(inputs) == ["evaluation", "training"]
    assert inputs["training"].name == inputs["evaluation"].name == "iris"
    shapes = {k: json.loads(d.profile)["features_shape"] for k, d in inputs.items()}
    assert shapes == {"training": [120, 4], "evaluation": [30, 4]}
    for key in ("test_loss", "test_accuracy"):
        assert [step for step, _ in history(client, rid, key)] == [0, 5, 10, 15, 20]
    metrics = run.data.metrics
    assert metrics["final_test_accuracy"] == history(client, rid, "test_accuracy")[-1][1]
    assert metrics["final_test_loss"] == history(client, rid, "test_loss")[-1][1]
    # Independent of which samples were held out: the two parts make up all 150 samples.
    W = np.load(client.download_artifacts(rid, "weights/W_final.npy"))
    x, t = load_data(OmegaConf.structured(IrisData()), [4, 3], None)
    whole = 120 * metrics["final_loss"] + 30 * metrics["final_test_loss"]
    assert whole == pytest.approx(150 * book_loss(W, x, t), rel=1e-12)
    right = 120 * metrics["final_accuracy"] + 30 * metrics["final_test_accuracy"]
    assert round(right) == np.sum(np.argmax(x @ W, axis=1) == t)
    note = run.data.tags["mlflow.note.content"]
    assert "iris (120 samples)" in note
    assert f"Held out: loss {metrics['final_test_loss']:.6g}, accuracy " in note
    assert f"held out 30 samples: loss {metrics['final_test_loss']:.10g}" in proc.stdout
