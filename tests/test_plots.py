"""A run's figures (numgrad.plots.run): on an Agg canvas, returned or saved, never shown."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from numgrad.plots import run as plots
from numgrad.plots import sweep as sweep_plots
from numgrad.plots.figure import save

PNG = b"\x89PNG\r\n\x1a\n"


def test_figures_are_returned_not_shown():
    code = (
        "import sys, numpy as np\n"
        "from numgrad.plots import run as plots\n"
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
    assert save(fig, tmp_path / "w.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("steps", [0, 1, 200, 5000])
def test_draw_run_writes_three_pngs(tmp_path, steps):
    s = np.arange(steps + 1)
    written = plots.draw_run(
        tmp_path, s, 1 / (s + 1.0), 0.5 / (s + 1.0),
        {"W_init": np.zeros((2, 3)), "W_final": np.ones((2, 3)), "gradient": None},
    )  # fmt: skip
    assert [p.name for p in written] == ["loss.png", "grad_norm.png", "weights.png"]
    assert all(p.read_bytes()[:8] == PNG for p in written)


def test_draw_run_without_steps_or_weights(tmp_path):
    assert plots.draw_run(tmp_path, [], [], [], {"W_init": None}) == []


def test_weights_near_the_float_limit_draw_without_a_warning(tmp_path):
    code = (
        "import numpy as np, pathlib\n"
        "from numgrad.plots.run import draw_run\n"
        "W = np.full((2, 3), 1e308); W[0, 0] = -1e308\n"
        f"draw_run(pathlib.Path({str(tmp_path)!r}), [0, 1], [1e308, 1e300], [1e308, 0.0],"
        " {'W_init': W, 'W_final': W * 1.7})\n"
    )
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert proc.stderr == ""
    assert (tmp_path / "weights.png").read_bytes()[:8] == PNG


def test_sweep_figures(tmp_path):
    rows = [
        {"params": {"gradient.h": h, "optimizer.lr": "0.1"}, "status": "FINISHED",
         "final_loss": 0.5, "grad_rel_error": e}
        for h, e in (("1e-1", 1e-4), ("1e-5", 1e-11), ("1e-11", 1e-5))
    ] + [{"params": {"gradient.h": "1e-3", "optimizer.lr": "0.1"}, "status": "FAILED",
          "final_loss": None, "grad_rel_error": None}]  # fmt: skip
    assert sweep_plots.swept_numeric(rows) == {"gradient.h": [1e-11, 1e-5, 1e-3, 1e-1]}
    fig = sweep_plots.metric_vs_parameter(rows, "gradient.h", "grad_rel_error")
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "(1 job without a value not shown)" in ax.get_title()
    paths = sweep_plots.render_sweep(rows, tmp_path)
    assert sorted(p.name for p in paths) == [
        "final_loss_vs_gradient.h.png", "grad_rel_error_vs_gradient.h.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in paths)
    points = (("0.1", 1.0), ("1.0", 0.5))
    linear = sweep_plots.metric_vs_parameter(
        [{"params": {"optimizer.lr": lr}, "final_loss": y} for lr, y in points],
        "optimizer.lr", "final_loss",
    )  # fmt: skip
    assert linear.axes[0].get_xscale() == "linear"  # one decade: no log axis


def _run_figures(out, steps, seed, shape=(2, 3)):
    rng = np.random.default_rng(seed)
    s = np.arange(steps + 1)
    W = rng.normal(size=shape) * 10.0**seed
    grad = rng.normal(size=shape)
    grad.flat[0] = np.nan  # a missing cell stays masked in a redrawn figure too
    return plots.draw_run(out, s, 1 / (s + 1.0 + seed), rng.random(s.size) - 0.5 * (seed % 2),
                          {"W_init": W, "W_final": W * 0.5, "gradient": grad})  # fmt: skip


@pytest.mark.parametrize(("steps", "shape"), [(10, (2, 3)), (200, (2, 3)), (5, (8, 8))])
def test_a_redrawn_figure_is_the_same_png_as_a_new_one(tmp_path, steps, shape):
    plots.forget_figures()
    _run_figures(tmp_path / "earlier", steps, seed=3, shape=shape)  # figures kept from this run
    redrawn = _run_figures(tmp_path / "redrawn", steps, seed=1, shape=shape)
    plots.forget_figures()
    fresh = _run_figures(tmp_path / "fresh", steps, seed=1, shape=shape)
    assert (
        [p.name for p in redrawn]
        == [p.name for p in fresh]
        == ["loss.png", "grad_norm.png", "weights.png"]
    )
    for a, b in zip(redrawn, fresh, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def _study_rows():
    """A scheme-by-h study as the summary holds it; complex errs exactly 0 at one h."""
    errors = {
        "forward": {"1e-2": 3e-3, "1e-5": 3e-6, "1e-8": 6e-9, "1e-11": 7e-6},
        "central": {"1e-2": 1e-5, "1e-5": 7e-12, "1e-8": 1e-8, "1e-11": 7e-6},
        "complex": {"1e-2": 1e-5, "1e-5": 1e-11, "1e-8": 1.1e-16, "1e-11": 0.0},
    }
    return [
        {"params": {"gradient.scheme": s, "gradient.h": h}, "status": "FINISHED",
         "final_loss": 0.6, "grad_rel_error": e}
        for s, by_h in errors.items() for h, e in by_h.items()
    ]  # fmt: skip


def test_error_against_h_draws_one_line_per_scheme(tmp_path):
    rows = _study_rows()
    fig = sweep_plots.metric_vs_parameter(rows, "gradient.h", "grad_rel_error")
    ax = fig.axes[0]
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["scheme=central", "scheme=complex", "scheme=forward"]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")  # an exact 0 does not undo it
    assert "(1 exact zero not shown)" in ax.get_title()
    forward = next(line for line in ax.get_lines() if line.get_label() == "scheme=forward")
    assert list(forward.get_xdata()) == [1e-11, 1e-8, 1e-5, 1e-2]
    # and with dtype swept too: one line per scheme and dtype
    both = [{**r, "params": {**r["params"], "gradient.dtype": d}} for r in rows
            for d in ("float32", "float64")]  # fmt: skip
    lines = sweep_plots.metric_vs_parameter(both, "gradient.h", "grad_rel_error").axes[0]
    assert len(lines.get_lines()) == 6
    assert "dtype=float32, scheme=forward" in [line.get_label() for line in lines.get_lines()]


def test_best_steps_name_the_least_error_of_each_scheme():
    assert sweep_plots.best_steps(_study_rows()) == (
        "Least gradient error per line: scheme=central: h=1e-05 (rel. error 7e-12); "
        "scheme=complex: h=1e-11 (rel. error 0); scheme=forward: h=1e-08 (rel. error 6e-09)."
    )
    no_check = [{**r, "grad_rel_error": None} for r in _study_rows()]
    assert sweep_plots.best_steps(no_check) == ""
    one_h = [r for r in _study_rows() if r["params"]["gradient.h"] == "1e-5"]
    assert sweep_plots.best_steps(one_h) == ""  # h not swept: no study of h


@pytest.mark.parametrize("left_out", [0, 3])
def test_the_error_against_h_title_fits_in_its_figure(tmp_path, left_out):
    # The longest title numgrad draws: the truncation/round-off one with both notes.
    rows = [{"params": {"gradient.h": h}, "grad_rel_error": e}
            for h, e in (("1e-1", 1e-3), ("1e-5", 1e-10), ("1e-9", 1e-6), ("1e-12", 0.0))]  # fmt: skip
    rows += [{"params": {"gradient.h": "1e-20"}}] * left_out  # failed jobs: no value
    (path,) = [p for p in sweep_plots.render_sweep(rows, tmp_path) if "grad_rel_error" in p.name]
    fig = sweep_plots.metric_vs_parameter(
        rows, "gradient.h", "grad_rel_error",
        title="gradient's relative error against h (truncation vs round-off)",
    )  # fmt: skip
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    title, axes = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width and title.y1 <= fig.bbox.height
    assert title.y0 >= axes.y1  # above the plot, not over it
    assert "1 exact zero not shown" in ax.get_title()
    assert ("3 jobs without a value" in ax.get_title()) == (left_out == 3)
    assert path.stat().st_size > 0
