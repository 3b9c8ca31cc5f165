"""The installed ``numgrad`` script, run as a user would, in a subprocess."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from numgrad.functions import cross_entropy_error, softmax

pytestmark = pytest.mark.slow
OFF = "tracking.enabled=false"


def final_loss(stdout: str) -> float:
    return float(re.search(r"final loss (\S+),", stdout).group(1))


def only_run(workdir):
    client = MlflowClient(workdir.uri)
    runs = client.search_runs([client.get_experiment_by_name("numgrad").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def load_weights(client, run, name):
    path = client.download_artifacts(run.info.run_id, f"weights/{name}.npy")
    return np.load(path)


def test_default_run(workdir):
    proc = workdir.run()
    assert "finished after 100 steps (stop reason: steps)" in proc.stdout
    assert workdir.store.is_file()
    client, run = only_run(workdir)
    assert run.info.status == "FINISHED"
    W = load_weights(client, run, "W_final")
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    # the printed final loss is the loss of the stored final W, by the book's own functions
    assert final_loss(proc.stdout) == pytest.approx(cross_entropy_error(softmax(x @ W), t), 1e-9)
    assert run.data.metrics["final_loss"] == pytest.approx(final_loss(proc.stdout), 1e-9)


def test_overrides_run(workdir):
    proc = workdir.run(
        "optimizer.lr=0.5", "gradient.h=1e-3", "net.shape=[4,3]", "data=blobs", "seed=7"
    )
    client, run = only_run(workdir)
    params = run.data.params
    assert params["optimizer.lr"] == "0.5" and params["gradient.h"] == "0.001"
    assert params["seed"] == "7" and params["data.name"] == "blobs"
    assert load_weights(client, run, "W_init").shape == (4, 3)
    assert run.data.metrics["final_loss"] == pytest.approx(final_loss(proc.stdout), 1e-9)


def test_iris_reaches_90_percent(workdir):
    proc = workdir.run("data=iris", "net.shape=[4,3]", "optimizer.steps=300", OFF)
    accuracy = float(re.search(r"accuracy (\S+),", proc.stdout).group(1))
    assert accuracy >= 0.9
    assert not (workdir.path / "outputs").exists()  # tracking off: no store


def test_multirun_2x2(workdir):
    proc = workdir.run("optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4", OFF, multirun=True)
    jobs = sorted(p.name for p in (workdir.path / "multirun").iterdir() if p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"]
    assert proc.stdout.count("final loss") == 4
    for job in jobs:
        overrides = (workdir.path / "multirun" / job / ".hydra" / "overrides.yaml").read_text()
        assert "optimizer.lr=" in overrides and "gradient.h=" in overrides


def test_same_seed_is_bit_identical_and_seed_changes_w0(workdir):
    for seed in (3, 3, 4):
        workdir.run(f"seed={seed}", "optimizer.steps=20", f"tracking.run_name=s{seed}")
    client = MlflowClient(workdir.uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("numgrad").experiment_id], order_by=["start_time ASC"]
    )
    assert [r.info.run_name for r in runs] == ["s3", "s3", "s4"]
    first, second, other = (load_weights(client, r, "W_final") for r in runs)
    assert first.tobytes() == second.tobytes() and not np.array_equal(first, other)
    w0 = [load_weights(client, r, "W_init") for r in runs]
    assert w0[0].tobytes() == w0[1].tobytes() and not np.array_equal(w0[0], w0[2])


def test_python_dash_m_and_help(workdir):
    import subprocess

    help_text = subprocess.run(
        [sys.executable, "-m", "numgrad", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for group in ("data:", "gradient:", "optimizer:", "tracking:"):
        assert group in help_text
    assert "article, blobs, digits, file, iris" in help_text


def bad(workdir, *overrides):
    proc = workdir.run(*overrides, check=False)
    return proc.returncode, proc.stderr.strip()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1"], "invalid optimizer.lr=-1.0: must be > 0"),
        (["optimizer.lr=nan"], "invalid optimizer.lr=nan: must be a finite number"),
        (["optimizer.lr=1e400"], "invalid optimizer.lr=inf: must be a finite number"),
        (["gradient.h=0"], "invalid gradient.h=0.0: must be > 0"),
        (["gradient.h=inf"], "invalid gradient.h=inf: must be a finite number"),
        (["optimizer.steps=-5"], "invalid optimizer.steps=-5: must be >= 0"),
        (["optimizer.tol=-1"], "invalid optimizer.tol=-1.0: must be >= 0"),
        (["net.shape=[3,3]"],
         "invalid net.shape=[3, 3]: does not fit data=article: x has 2 features (columns) but W has 3 rows"),
        (["net.init=given", "net.W=[[1,2],[3,4]]"],
         "invalid net.W=[[1.0, 2.0], [3.0, 4.0]]: has shape [2, 2], net.shape is [2, 3]"),
        (["data=file", "data.path=missing.npz"], "invalid data.path='missing.npz': no such file"),
        (["data.t=[0,0,7]"], "invalid data.t=[0, 0, 7]: t row 0 is not one-hot"),
        (["data.x=[[0.6,0.9]]", "data.t=[3]"], "invalid data.t=[3]: label 3 at t[0] is out of range"),
        (["data.x=[0.6,nan]"], "invalid data.x=[0.6, nan]: x has 1 non-finite value(s)"),
    ],
)  # fmt: skip
def test_bad_input_one_line_no_run(workdir, overrides, message):
    code, err = bad(workdir, *overrides)
    assert code == 2
    assert err.startswith("numgrad: error: " + message), err
    assert len(err.splitlines()) == 1
    assert not workdir.store.exists()  # nothing was created
    assert not (workdir.path / "run").exists()  # not even Hydra's run dir


def test_npz_without_t_and_labels_out_of_range(workdir):
    np.savez(workdir.path / "only_x.npz", x=np.ones((3, 2)))
    code, err = bad(workdir, "data=file", "data.path=only_x.npz")
    assert code == 2 and err == (
        "numgrad: error: invalid data.path='only_x.npz': needs arrays x and t (found: x)"
    )
    np.savez(workdir.path / "bad_labels.npz", x=np.ones((3, 2)), t=np.array([0, 1, 5]))
    code, err = bad(workdir, "data=file", "data.path=bad_labels.npz")
    assert code == 2 and "label 5" in err and len(err.splitlines()) == 1
    assert not workdir.store.exists()


def test_csv_file_runs(workdir):
    rows = ["f1,f2,label", "0.1,0.2,0", "0.9,0.8,2", "0.5,0.4,1"]
    (workdir.path / "d.csv").write_text("\n".join(rows) + "\n")
    proc = workdir.run("data=file", "data.path=d.csv", "optimizer.steps=5", OFF)
    assert "after 5 steps" in proc.stdout


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.momentum=0.9", "optimizer.momentum"),
        ("net.shape=[2,", "net.shape"),
        ("gradient.h=1e-3,1e-4", "gradient.h"),  # a sweep list without -m
        ("data=nope", "data/nope"),
        ("net.init=uniform", "net.init"),
    ],
)
def test_composition_errors_are_one_line_naming_the_field(workdir, override, field):
    code, err = bad(workdir, override)
    assert code == 2
    assert err.startswith("numgrad: error: ") and field in err and len(err.splitlines()) == 1
    assert not workdir.store.exists() and not (workdir.path / "run").exists()


def test_progress_bar_only_when_asked_or_on_a_terminal(workdir):
    quiet = workdir.run("optimizer.steps=20000", OFF)  # stderr is a pipe here: no bar
    assert "/20000" not in quiet.stderr
    shown = workdir.run("optimizer.steps=20000", "progress=true", OFF)
    # tqdm's bar; text mode turns its carriage returns into newlines
    assert re.search(r"^100%\|#+\| 20000/20000 \[.*, loss \d", shown.stderr, re.MULTILINE)


def test_an_h_below_the_resolution_of_w_is_refused(workdir):
    code, err = bad(workdir, "gradient.h=1e-20", "optimizer.tol=1e-6")
    largest = np.abs(np.random.default_rng(0).standard_normal((2, 3))).max()  # seed 0's W0
    half_spacing = np.spacing(largest) / 2  # below it, w + h rounds back to w
    assert code == 2 and err == (
        "numgrad: error: invalid gradient.h=1e-20: does not resolve W in float64 "
        f"(max|W| = {largest:.3g}: some w ± h == w); use h >= 5.6e-17"
    )
    assert 5.6e-17 >= half_spacing > 5.5e-17  # rounded up: enough as printed
    assert not workdir.store.exists() and not (workdir.path / "run").exists()
    code, err = bad(workdir, "gradient.h=1e-8", "gradient.dtype=float32")
    half_spacing = np.spacing(np.float32(largest)) / 2
    assert code == 2 and f"in float32 (max|W| = {largest:.3g}: " in err
    assert err.endswith("use h >= 3e-08") and 3e-08 >= half_spacing > 2.9e-08


def test_a_step_w_outgrows_mid_descent_fails_the_run_not_converges(workdir):
    # W[0] just below 2^20, where h = 1e-10 still resolves it; the first update (the
    # true class's column grows by about lr * 0.6 * 2/3 = 2) carries it past 2^20,
    # where the loop's W + h == W: every difference quotient would be an exact 0.
    W = "[[1048575.4,1048575.45,1048575.5],[0,0,0]]"
    proc = workdir.run("net.init=given", f"net.W={W}", "gradient.method=loop",
                       "gradient.h=1e-10", "optimizer.lr=5", "optimizer.steps=8",
                       "optimizer.tol=1e-6", check=False)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "numgrad: error: at step 1 gradient.h=1e-10 no longer resolves W "
        "(max|W| = 1e+06): use h >= 1.2e-10"
    )
    client, run = only_run(workdir)
    assert run.info.status == "FAILED"
    assert run.data.tags["numgrad.stop_reason"] == "step_too_small"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0]


def test_float32_runs_the_whole_descent_and_keeps_its_dtype(workdir):
    workdir.run("gradient.dtype=float32", "gradient.check=true", "optimizer.steps=5")
    client, run = only_run(workdir)
    W = load_weights(client, run, "W_final")
    assert W.dtype == np.float32
    assert run.data.params["gradient.dtype"] == "float32"
    # measured against the float64 analytic gradient: float32 rounding shows
    assert 1e-6 < run.data.metrics["grad_rel_error"] < 1e-2
