"""Full-batch runs against W_final recorded before mini-batches and held-out data existed.

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

from numgrad.config import register_configs
from numgrad.runner import execute

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
