"""data=digits: scikit-learn's 8x8 digits as a data source, and what a default run reaches."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from numgrad.config import register_configs
from numgrad.data import load_data
from numgrad.data.digits import DigitsData, dataset_source
from numgrad.memory import check_memory, sample_count
from numgrad.runner import execute
from numgrad.tracking.dataset import dataset_name
from tests.conftest import all_runs, numgrad_env

CONF = Path(__file__).resolve().parents[1] / "conf"
#: What the README states the engines agree to: the loop and the vectorized engine to 1e-9;
#: the analytic gradient, on digits, to 4.1e-9 after 300 steps (the h² error, summed).
LOOP_AGREES, ANALYTIC_AGREES = 1e-9, 4.1e-9
METHODS = ("vectorized", "loop", "analytic")


def compose_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_digits_are_sklearns_images_with_pixels_scaled_to_0_1():
    from sklearn.datasets import load_digits

    x, t = load_data(OmegaConf.structured(DigitsData()), [64, 10], None)
    reference = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64 and t.dtype == np.int64
    assert np.array_equal(x * 16, reference.data) and np.array_equal(t, reference.target)
    assert (x.min(), x.max()) == (0.0, 1.0) and np.bincount(t).min() >= 174


def test_the_option_sets_its_shape_and_descent_and_overrides_still_win():
    cfg = compose_cfg("data=digits")
    assert list(cfg.net.shape) == [64, 10] and cfg.net.scale == 0.01
    assert (cfg.optimizer.lr, cfg.optimizer.steps, cfg.data.test_fraction) == (2.0, 300, 0.2)
    cfg = compose_cfg("data=digits", "optimizer.lr=0.5", "data.test_fraction=0")
    assert cfg.optimizer.lr == 0.5 and cfg.data.test_fraction == 0.0


def test_its_size_is_known_before_loading_and_its_name_and_file_for_mlflow():
    cfg = compose_cfg("data=digits")
    assert sample_count(cfg.data) == (1797, 0)
    check_memory(cfg)
    assert dataset_name(cfg.data, seed=3) == "digits"
    source = dataset_source(cfg.data)
    assert source.is_file() and source.parts[-4:] == (
        "sklearn",
        "datasets",
        "data",
        "digits.csv.gz",
    )


@pytest.mark.slow
def test_without_scikit_learn_it_says_how_to_install_it(workdir, tmp_path):
    fake = tmp_path / "fake" / "sklearn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named sklearn')\n")
    env = numgrad_env()
    env["PYTHONPATH"] = f"{fake.parent}:{env.get('PYTHONPATH', '')}"
    proc = workdir.run("data=digits", "tracking.enabled=false", check=False, env=env)
    assert (proc.returncode, proc.stderr) == (
        2,
        "numgrad: error: invalid data='digits': needs scikit-learn (MLflow installs it): "
        "pip install scikit-learn\n",
    )
    assert not (workdir.path / "run").exists()


@pytest.mark.slow
def test_a_default_digits_run_reaches_95_percent_held_out(workdir):
    proc = workdir.run("data=digits")
    _, (run,) = all_runs(workdir.uri)
    metrics = run.data.metrics
    assert metrics["final_test_accuracy"] >= 0.95 and metrics["steps_taken"] == 300
    held_out = re.search(r"held out (\d+) samples: loss \S+, accuracy (\S+)", proc.stdout)
    assert held_out.group(1) == "359" and float(held_out.group(2)) == pytest.approx(
        metrics["final_test_accuracy"], abs=5e-5
    )
    contexts = sorted(
        (d.dataset.name, {t.key: t.value for t in d.tags}["mlflow.data.context"])
        for d in run.inputs.dataset_inputs
    )
    assert contexts == [("digits", "evaluation"), ("digits", "training")]


def final_weights(tmp_path: Path, *overrides: str) -> np.ndarray:
    cfg = compose_cfg(*overrides, "tracking.offline=true", "tracking.log_model=false")
    with contextlib.redirect_stdout(io.StringIO()):
        execute(cfg, output_dir=tmp_path, overrides=list(overrides))
    return np.load(tmp_path / "artifacts" / "weights" / "W_final.npy")


@pytest.mark.slow
def test_the_loop_and_the_analytic_gradient_end_on_the_vectorized_w(tmp_path):
    # Ten steps: the loop takes about 0.3 s a gradient here (the README measures all 300).
    short = ["data=digits", "optimizer.steps=10"]
    W = {m: final_weights(tmp_path / m, *short, f"gradient.method={m}") for m in METHODS}
    assert np.abs(W["loop"] - W["vectorized"]).max() <= LOOP_AGREES
    assert np.abs(W["analytic"] - W["vectorized"]).max() <= ANALYTIC_AGREES
    assert np.abs(W["vectorized"]).max() > 0.1  # they moved: not agreement at W0
