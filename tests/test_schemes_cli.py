"""The schemes and the advised h through the installed ``numgrad`` script, as a user runs them."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient

from tests.test_sweeps import artifacts, summary, sweep_runs

pytestmark = pytest.mark.slow
OFF = "tracking.enabled=false"
# Large weights (softmax ignores the row's common 100): W's resolution limits h, and the
# loss still resolves the smallest h that moves W, so a run there goes to its end.
LARGE_W = "net.W=[[100,100.5,100.2],[0,0,0]]"


def advice(stderr: str) -> str:
    """The h that a refusal advises, exactly as printed."""
    return re.fullmatch(r"numgrad: error: invalid gradient\.h=.*; use h >= (\S+)", stderr).group(1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_advised_h_as_printed_runs(workdir, dtype):
    given = ("net.init=given", LARGE_W, f"gradient.dtype={dtype}", "optimizer.steps=3", OFF)
    refused = workdir.run("gradient.h=1e-20", *given, check=False)
    assert refused.returncode == 2
    h = advice(refused.stderr.strip())
    assert h == {"float64": "7.2e-15", "float32": "3.9e-06"}[dtype]
    done = workdir.run(f"gradient.h={h}", *given)
    assert "finished after 3 steps (stop reason: steps)" in done.stdout
    # The book's W: the advice passes the refusal; the loss (in float64, not in W's
    # resolution) then cannot resolve so small a step, which the run says on its own terms.
    refused = workdir.run("gradient.h=1e-20", f"gradient.dtype={dtype}", OFF, check=False)
    h = advice(refused.stderr.strip())
    assert h == {"float64": "5.6e-17", "float32": "3e-08"}[dtype]
    again = workdir.run(f"gradient.h={h}", f"gradient.dtype={dtype}", OFF, check=False)
    assert again.returncode == 1 and "invalid gradient.h" not in again.stderr
    assert "the loss does not resolve so small a step; use a larger h" in again.stderr


def test_the_complex_step_has_its_own_limit_and_advice(workdir):
    refused = workdir.run("gradient.scheme=complex", "gradient.h=1e-320", OFF, check=False)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "numgrad: error: invalid gradient.h=1e-320: h·x underflows in float64 "
        "(min|x| = 0.6: digits lost); use h >= 3.8e-308"
    )
    assert not (workdir.path / "outputs").exists()
    # The real steps' limit does not apply: 1e-300 leaves W + h == W, not the complex step.
    done = workdir.run("gradient.scheme=complex", "gradient.h=1e-300", "gradient.check=true",
                       "optimizer.steps=2", OFF)  # fmt: skip
    error = float(re.search(r"grad rel\. error (\S+)", done.stdout).group(1))
    assert error <= 1e-14
    done = workdir.run("gradient.scheme=complex", f"gradient.h={advice(refused.stderr.strip())}",
                       "optimizer.steps=2", OFF)  # fmt: skip
    assert "finished after 2 steps" in done.stdout


@pytest.mark.parametrize(
    ("scheme", "method", "bound"),
    [
        ("forward", "vectorized", 1e-7),
        ("central4", "loop", 1e-10),
        ("complex", "vectorized", 1e-14),
    ],
)
def test_auto_h_is_logged_as_the_h_it_used(workdir, scheme, method, bound):
    proc = workdir.run(f"gradient.scheme={scheme}", f"gradient.method={method}",
                       "gradient.h=auto", "gradient.check=true", "optimizer.steps=1")  # fmt: skip
    used = re.search(rf"gradient\.h=auto: h = (\S+) \({scheme}, float64\)", proc.stdout).group(1)
    client = MlflowClient(workdir.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("numgrad").experiment_id])
    params = run.data.params
    assert params["gradient.scheme"] == scheme and params["gradient.method"] == method
    assert f"{float(params['gradient.h']):.3g}" == used  # the number, not "auto"
    assert run.data.metrics["grad_rel_error"] <= bound


def test_a_study_of_h_draws_one_line_per_scheme(workdir):
    workdir.run(
        "gradient.scheme=forward,central,central4,complex", "gradient.h=1e-2,1e-5,1e-8",
        "gradient.check=true", "optimizer.steps=0", multirun=True,
    )  # fmt: skip
    client, parent, _ = sweep_runs(workdir.uri)
    rows = summary(client, parent)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"FINISHED"}
    assert {r["scheme"] for r in rows} == {"forward", "central", "central4", "complex"}
    error = {(r["scheme"], float(r["gradient.h"])): float(r["grad_rel_error"]) for r in rows}
    assert error["central4", 1e-2] < error["central", 1e-2] < error["forward", 1e-2]
    assert error["complex", 1e-8] <= 1e-14 < error["central", 1e-8]  # no cancellation
    assert "figures/grad_rel_error_vs_gradient.h.png" in artifacts(client, parent.info.run_id)
    note = parent.data.tags["mlflow.note.content"]
    best_forward = min((1e-2, 1e-5, 1e-8), key=lambda h: error["forward", h])
    assert f"scheme=forward: h={best_forward:.3g} (rel. error " in note
    assert all(f"scheme={s}: h=" in note for s in ("central", "central4", "complex"))
