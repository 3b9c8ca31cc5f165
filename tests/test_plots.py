"""Figures: drawn on an Agg canvas, returned, saved as PNG; never shown, no pyplot."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from numgrad import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_are_returned_not_shown():
    code = (
        "import sys, numpy as np\n"
        "from numgrad import plots\n"
        "fig = plots.heatmaps({'W': np.eye(2)})\n"
        "print(type(fig).__name__, type(fig.canvas).__name__, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Figure", "FigureCanvasAgg", "False"]


def test_curve_scales():
    assert (
        plots.curve(np.arange(4), np.array([4.0, 2, 1, 0.5]), "loss").axes[0].get_yscale() == "log"
    )
    # a zero (converged gradient) or a nan cannot go on a log axis: linear, and no warning
    zero = plots.curve(np.arange(3), np.array([1.0, 0.0, np.nan]), "grad_norm")
    assert zero.axes[0].get_yscale() == "linear"


def test_heatmaps_skip_missing_panels_and_survive_non_finite(tmp_path):
    fig = plots.heatmaps(
        {
            "W_init": np.ones((2, 3)),
            "W_final": None,
            "gradient": np.array([[np.inf, 0, -1], [np.nan, 2, 3]]),
        }
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert titles == ["W_init (2×3)", "gradient (2×3)"]
    assert plots.save(fig, tmp_path / "w.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("steps", [0, 1, 200])
def test_render_run_from_a_staging_directory(tmp_path, steps):
    art = tmp_path / "artifacts"
    art.mkdir()
    rows = [
        f"{i},{1 / (i + 1)!r},{0.5 / (i + 1)!r},0.1,1.0,0.5,,{i * 1e-4!r}" for i in range(steps + 1)
    ]
    header = "step,loss,grad_norm,grad_max_abs,weight_norm,accuracy,grad_rel_error,seconds"
    (art / "history.csv").write_text("\n".join([header, *rows]) + "\n")
    np.savez(tmp_path / "figure_input.npz", W_init=np.zeros((2, 3)), W_final=np.ones((2, 3)))
    written = plots.render_run(tmp_path)
    assert sorted(p.name for p in written) == sorted(plots.FIGURES)
    assert all(p.read_bytes()[:8] == PNG for p in written)


def test_worker_draws_on_request(tmp_path):
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "history.csv").write_text(
        "step,loss,grad_norm\n0,1.0,0.5\n1,0.5,0.25\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "numgrad.plots"],
        input=f"{tmp_path}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "artifacts" / "figures").iterdir()} == {
        "loss.png",
        "grad_norm.png",
    }
    # without a request (the run ended otherwise) it exits quietly
    idle = subprocess.run(
        [sys.executable, "-m", "numgrad.plots"],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert idle.returncode == 0 and idle.stderr == ""
