"""What a sweep is, from its Hydra config: names and planned jobs (numgrad.sweep.plan)."""

from __future__ import annotations

import pytest

from numgrad.config import ConfigError
from numgrad.sweep import plan
from numgrad.sweep.plan import refuse_sweep_wide


def test_planned_jobs_follow_the_basic_sweepers_order():
    jobs = plan.planned_jobs("basic", {}, ["optimizer.lr=0.1,1.0", "data=blobs", "seed=1,2"])
    assert jobs == [
        ["optimizer.lr=0.1", "data=blobs", "seed=1"], ["optimizer.lr=0.1", "data=blobs", "seed=2"],
        ["optimizer.lr=1.0", "data=blobs", "seed=1"], ["optimizer.lr=1.0", "data=blobs", "seed=2"],
    ]  # fmt: skip
    assert plan.planned_jobs("optuna", {}, ["optimizer.lr=0.1,1.0"]) is None
    assert plan.planned_jobs("basic", {}, ["optimizer.lr=interval(0,1)"]) is None
    assert plan.planned_jobs("basic", {}, ["data=glob(i*)"]) is None  # needs Hydra's loader
    assert plan.planned_jobs("basic", {}, ["optimizer.lr=0.1,"]) is None  # does not parse


def test_names_of_sweeps_and_launchers():
    assert plan.sweep_name(["optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4"], {}, None) == (
        "sweep lr=0.1,1.0 h=1e-2,1e-4"
    )
    assert plan.sweep_name([], {"optimizer.lr": "tag(log, interval(1e-3, 10.0))"}, None) == (
        "sweep lr=tag(log, interval(1e-3, 10.0))"
    )
    assert plan.sweep_name(["x=1,2"], {}, "mine") == "mine (sweep)"
    assert (
        plan.short_target("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher")
        == "joblib"
    )


SWEEPS = [
    ["optimizer.lr=0.1,1.0", "data=blobs", "seed=1,2"],
    ["seed=1,2", "optimizer.lr=0.5", "seed=3,4,5"],  # a key given again replaces its values
    ["+extra.x=1,2", "~net.W", "net.shape=[2,3],[3,3]", "gradient.h=range(1,4)"],
    ["optimizer.lr=choice(0.1,0.01)", "data=iris,blobs", "tracking.run_name='a,b'"],
    ["optimizer.lr=sort(3,1,2)", "seed=1"],
    ["gradient.dtype=float32,float64", "gradient.h=1e-1,1e-2", "optimizer.steps=0"],
    [],
]


@pytest.mark.parametrize("overrides", SWEEPS)
def test_planned_jobs_match_the_basic_sweepers_own_split(overrides):
    """planned_jobs uses Hydra's public parser; the basic sweeper splits with a private method.

    If Hydra renames or moves it, this test says so with the version: check planned_jobs
    against the order a basic sweep runs its jobs in, then update the reference here.
    """
    import hydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        split = BasicSweeper.split_arguments
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"hydra-core {hydra.__version__}: BasicSweeper.split_arguments is gone ({exc})")
    params = {"seed": "7,8"} if overrides else {}
    parsed = OverridesParser.create().parse_overrides(
        [*(f"{k}={v}" for k, v in params.items()), *overrides]
    )
    (expected,) = split(parsed, None)
    assert plan.planned_jobs("basic", params, overrides) == expected, (
        f"hydra-core {hydra.__version__} splits {overrides} differently"
    )


@pytest.mark.parametrize(
    ("params", "overrides", "field"),
    [
        ({}, ["tracking.uri=sqlite:///a.db,sqlite:///b.db"], "tracking.uri"),
        ({}, ["tracking.offline=true,false"], "tracking.offline"),
        ({"tracking.experiment": "a,b"}, [], "tracking.experiment"),
        ({}, ["tracking.enabled=choice(true,false)"], "tracking.enabled"),
    ],
)
def test_a_sweep_wide_setting_that_is_swept_is_refused_naming_it(params, overrides, field):
    with pytest.raises(ConfigError, match=rf"^invalid {field}=.*one value for the whole sweep"):
        refuse_sweep_wide(params, overrides)


def test_per_run_tracking_settings_may_be_swept():
    refuse_sweep_wide({"tracking.log_every": "1,10"}, ["tracking.uri=sqlite:///a.db"])
