"""Mini-batches (``optimizer.batch_size``), and full-batch runs against W_final recorded
before mini-batches and held-out data existed.

``tests/data/w_final_full_batch.npz`` was written by the code of commit 53c3993 (offline
runs of the cases below, ``weights/W_final.npy``): a full-batch run must still end on
exactly those bytes.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from numgrad.config import ConfigError, register_configs
from numgrad.descent import Descent
from numgrad.gradient import vectorized_gradient
from numgrad.runner import execute
from tests.conftest import all_runs, history

CONF = Path(__file__).resolve().parents[1] / "conf"
RECORDED = Path(__file__).parent / "data" / "w_final_full_batch.npz"
CASES = {
    "article": [],
    "blobs": ["data=blobs", "seed=3", "net.shape=[3,4]", "optimizer.steps=40", "optimizer.lr=0.5"],
    "blobs_loop": ["data=blobs", "seed=5", "gradient.method=loop", "optimizer.steps=15"],
    "iris": ["data=iris", "data.test_fraction=0", "optimizer.steps=50"],  # as before the split
    "article_float32": ["gradient.dtype=float32", "gradient.h=1e-2", "optimizer.steps=30"],
    "blobs_analytic": [
        "data=blobs", "gradient.method=analytic", "optimizer.steps=60", "data.n_samples=90",
    ],
}  # fmt: skip


def final_weights(tmp_path: Path, overrides: list[str]) -> np.ndarray:
    """W_final of an offline run, read from the weights file it saved."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "tracking.offline=true",
                                           "tracking.log_model=false"])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        execute(cfg, output_dir=tmp_path, overrides=overrides)
    return np.load(tmp_path / "artifacts" / "weights" / "W_final.npy")


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_batch_runs_end_on_the_recorded_weights_bit_for_bit(tmp_path, case):
    recorded = np.load(RECORDED)[case]
    W = final_weights(tmp_path, CASES[case])
    assert W.dtype == recorded.dtype and W.shape == recorded.shape
    assert W.tobytes() == recorded.tobytes()


# ------------------------------------------------------------------ mini-batches


def book_loss(W, x, labels):
    """The book's cross-entropy of softmax(x @ W), written out sample by sample."""
    total = 0.0
    for row, label in zip(x, labels, strict=True):
        z = row @ W
        y = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        total += -np.log(y[label] + 1e-7)
    return total / len(x)


def book_gradient(W, x, labels, h=1e-4):
    """The book's numerical_gradient: one weight at a time, central differences."""
    grad = np.zeros_like(W)
    for index in np.ndindex(W.shape):
        keep = W[index]
        W[index] = keep + h
        up = book_loss(W, x, labels)
        W[index] = keep - h
        down = book_loss(W, x, labels)
        W[index] = keep
        grad[index] = (up - down) / (2 * h)
    return grad


def test_each_update_uses_a_batch_drawn_from_the_generator_as_the_book_does():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((40, 3)), rng.integers(0, 4, 40)
    W0 = rng.standard_normal((3, 4))
    W = W0.copy()
    records = list(
        Descent(W, x, labels, vectorized_gradient, h=1e-4, lr=0.5, steps=6, batch_size=8,
                rng=np.random.default_rng(11))
    )  # fmt: skip
    # The book's train_neuralnet.py: batch_mask = np.random.choice(train_size, batch_size).
    draws, ref = np.random.default_rng(11), W0.copy()
    for record in records:
        rows = draws.choice(40, 8)
        assert record.loss == pytest.approx(book_loss(ref, x[rows], labels[rows]), rel=1e-12)
        assert record.accuracy == np.mean(np.argmax(x[rows] @ ref, axis=1) == labels[rows])
        if record.step < 6:
            ref -= 0.5 * book_gradient(ref, x[rows], labels[rows])
    assert len(records) == 7  # steps stay the number of updates
    np.testing.assert_allclose(W, ref, rtol=1e-8, atol=1e-10)


def test_a_mini_batch_run_follows_its_seed(tmp_path):
    overrides = ["data=blobs", "data.n_samples=90", "optimizer.batch_size=10", "optimizer.steps=25"]
    a = final_weights(tmp_path / "a", [*overrides, "seed=1"])
    b = final_weights(tmp_path / "b", [*overrides, "seed=1"])
    c = final_weights(tmp_path / "c", [*overrides, "seed=2"])
    full = final_weights(tmp_path / "d", [*overrides[:2], "optimizer.steps=25", "seed=1"])
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert a.tobytes() != full.tobytes()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.batch_size=0"], "invalid optimizer.batch_size=0: must be >= 1"),
        (["data=blobs", "data.n_samples=30", "optimizer.batch_size=30"],
         "invalid optimizer.batch_size=30: must be less than the 30 training samples "
         "(null: all of them)"),
        (["data=iris", "optimizer.batch_size=120"],  # 30 of the 150 are held out
         "invalid optimizer.batch_size=120: must be less than the 120 training samples "
         "(null: all of them)"),
    ],
)  # fmt: skip
def test_a_batch_size_that_cannot_be_drawn_is_refused(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as info:
        final_weights(tmp_path, overrides)
    assert str(info.value) == message
    assert not (tmp_path / "artifacts").exists()  # refused before the run


@pytest.mark.slow
def test_a_mini_batch_run_logs_the_whole_training_set_every_log_every_steps(workdir):
    workdir.run("data=blobs", "data.n_samples=120", "optimizer.batch_size=12",
                "optimizer.steps=30", "tracking.log_every=10")  # fmt: skip
    client, (run,) = all_runs(workdir.uri)
    rid = run.info.run_id
    train = history(client, rid, "train_loss")
    assert [step for step, _ in train] == [0, 10, 20, 30]
    assert [step for step, _ in history(client, rid, "loss")] == [0, 10, 20, 30]
    assert run.data.metrics["final_loss"] == train[-1][1]
    assert run.data.metrics["final_accuracy"] == history(client, rid, "train_accuracy")[-1][1]
    # The curve is the mini-batch's: 12 samples, not the 120 of the whole set.
    assert all(a != b for (_, a), (_, b) in zip(history(client, rid, "loss"), train, strict=True))
    assert "test_loss" not in run.data.metrics  # nothing held out by default for blobs
