"""What a sweep is, from its Hydra config: names and planned jobs (numgrad.sweep.plan)."""

from __future__ import annotations

from numgrad.sweep import plan


def test_planned_jobs_follow_the_basic_sweepers_order():
    jobs = plan.planned_jobs("basic", {}, ["optimizer.lr=0.1,1.0", "data=blobs", "seed=1,2"])
    assert jobs == [
        ["optimizer.lr=0.1", "data=blobs", "seed=1"], ["optimizer.lr=0.1", "data=blobs", "seed=2"],
        ["optimizer.lr=1.0", "data=blobs", "seed=1"], ["optimizer.lr=1.0", "data=blobs", "seed=2"],
    ]  # fmt: skip
    assert plan.planned_jobs("optuna", {}, ["optimizer.lr=0.1,1.0"]) is None
    assert plan.planned_jobs("basic", {}, ["optimizer.lr=interval(0,1)"]) is None


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
