"""How a run's records are named and shaped for MLflow (numgrad.tracking.records)."""

from __future__ import annotations

import numpy as np
import pytest

from numgrad.tracking.records import (
    LONG_VALUE,
    MAX_PARAM_VALUE,
    fit_tag,
    flatten_params,
    run_name_from,
    sampled_steps,
    short_message,
)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "default"),
        (["hydra.run.dir=/x", "hydra/launcher=joblib"], "default"),
        (["optimizer.lr=0.5", "gradient.h=1e-3"], "lr=0.5,h=0.001"),
        (["data=blobs", "+data.x=abc", "~net.W", "tracking.run_name=z"], "data=blobs,x=abc,~W"),
        (["seed=007"], "seed=7"),
        (["optimizer.lr=0.15676677195506075"], "lr=0.156767"),
        (["hydrant=1"], "hydrant=1"),  # only hydra itself and what is under it is left out
    ],
)
def test_run_name_from_overrides(overrides, name):
    assert run_name_from(overrides) == name


def test_run_names_fit_mlflow():
    name = run_name_from([f"k{i}.value={i}" for i in range(200)])
    assert len(name) == 250 and name.endswith("...")


def test_params_flattened_within_limits():
    params = flatten_params(
        {
            "net": {"shape": [50, 50], "W": np.zeros((3, 3)).tolist()},
            "data": {"x": [1.5] * 2000},
            "seed": 3,
            "empty": {},
        }
    )
    assert params == {
        "net.shape": "[50, 50]",
        "net.W": "[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]",
        "data.x": LONG_VALUE,  # 10,000 characters: the config.yaml artifact holds it
        "seed": "3",
        "empty": "{}",
    }
    # an ndarray is never abbreviated by numpy's printing ("...")
    assert "..." not in flatten_params({"W": np.arange(2000.0)})["W"]
    exact = flatten_params({"x": "a" * MAX_PARAM_VALUE})["x"]
    assert exact == "a" * MAX_PARAM_VALUE  # at the limit: kept


@pytest.mark.parametrize(
    ("planned", "max_points", "every"),
    [(0, 10, 1), (7, 1000, 1), (20000, 1000, 1), (999, 10, 1), (100, 1000, 7), (10**9, 50, 3)],
)
def test_sampled_steps_capped_first_and_last(planned, max_points, every):
    steps = sorted(sampled_steps(planned, max_points, every))
    assert steps[0] == 0 and steps[-1] == planned
    assert len(steps) <= max_points and len(set(steps)) == len(steps)
    assert all(s in sampled_steps(planned, max_points, every) for s in steps)
    if (planned // every + 2) <= max_points:  # small runs: every log_every-th step
        assert steps == sorted({*range(0, planned + 1, every), planned})
    gaps = np.diff(steps)
    assert gaps.size == 0 or gaps.max() - gaps.min() <= 2 * every  # evenly spaced


def test_sampled_steps_membership_is_exact():
    sample = sampled_steps(1000, 11)
    assert [s for s in range(1001) if s in sample] == list(sample)
    assert np.int64(500) in sample and 500.5 not in sample and "500" not in sample


def test_tags_and_messages_fit():
    assert fit_tag("x" * 9000, "<see file>") == "<see file>"
    assert len(fit_tag("x" * 9000)) == 8000
    assert short_message(ValueError("a\n  b")) == "a b"
    assert short_message(ValueError()) == "ValueError"
    assert len(short_message(ValueError("x" * 1000))) == 503


def test_a_key_given_twice_is_named_by_its_last_value():
    # numgrad-rerun puts its own overrides after the original run's
    assert run_name_from(["optimizer.steps=3", "optimizer.lr=0.5", "optimizer.steps=1"]) == (
        "steps=1,lr=0.5"
    )


def test_an_explicit_run_name_is_cut_to_mlflows_limit(tmp_path):
    from numgrad.config import TrackingConfig
    from numgrad.tracking.sink import open_sink

    settings = TrackingConfig(offline=True, run_name="n" * 10_000)
    sink = open_sink(settings, config={}, overrides=[], output_dir=tmp_path, planned_steps=1)
    assert len(sink.run_name) == 250 and sink.run_name.endswith("...")
