"""Figures of one run, drawn with matplotlib's Agg canvas: returned, never shown.

No ``pyplot``: a :class:`~matplotlib.figure.Figure` with its own Agg canvas needs no
global figure registry and no GUI backend, and imports faster. matplotlib itself is
imported lazily, inside the functions.

``python -m numgrad.plots`` is the helper process :mod:`numgrad.tracking` starts when
a run opens: it imports matplotlib while the run imports mlflow, then waits for one
line on stdin (a staging directory) and draws that run's figures into it.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("loss.png", "grad_norm.png", "weights.png")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of layout="constrained": the solver doubles the drawing time.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.15, top=0.88, wspace=0.45)
    FigureCanvasAgg(fig)
    return fig


def curve(steps: np.ndarray, values: np.ndarray, name: str) -> Any:
    """A per-step curve, on a log scale when every value is positive.

    Examples
    --------
    >>> fig = curve(np.arange(3), np.array([1.0, 0.5, 0.25]), "loss")
    >>> fig.axes[0].get_yscale(), fig.axes[0].get_xlabel()
    ('log', 'step')
    """
    steps, values = _envelope(np.asarray(steps), np.asarray(values, dtype=float))
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, values, lw=1.2, marker="o" if len(values) < 30 else None, ms=3)
    finite = values[np.isfinite(values)]
    if finite.size and (finite > 0).all() and finite.max() > finite.min():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    ax.set_title(f"{name} per step")
    ax.grid(True, alpha=0.3)
    return fig


def heatmaps(panels: Mapping[str, np.ndarray | None]) -> Any:
    """Side-by-side heatmaps (e.g. W_init, W_final, gradient), colours centred on zero.

    ``None`` panels are left out; small matrices get their values written in the cells.

    Examples
    --------
    >>> fig = heatmaps({"W_init": np.eye(2), "W_final": None})
    >>> [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    ['W_init (2×2)']
    """
    shown = {
        k: np.atleast_2d(np.asarray(v, dtype=float)) for k, v in panels.items() if v is not None
    }
    n = max(len(shown), 1)
    fig = _figure(4.2 * n, 3.4)
    fig.subplots_adjust(left=0.25 / n, right=1 - 0.12 / n, wspace=0.55)
    for i, (name, M) in enumerate(shown.items()):
        ax = fig.add_subplot(1, n, i + 1)
        finite = np.abs(M[np.isfinite(M)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        image = ax.imshow(
            np.ma.masked_invalid(M), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
            aspect="auto", interpolation="nearest",
        )  # fmt: skip
        if M.size <= 36:  # small enough to read the numbers
            for (r, c), value in np.ndenumerate(M):
                dark = abs(value) > 0.6 * vmax  # white on the saturated ends of the map
                ax.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")  # fmt: skip
        if max(M.shape) <= 12:
            ax.set_xticks(range(M.shape[1]))
            ax.set_yticks(range(M.shape[0]))
        ax.set_title(f"{name} ({M.shape[0]}×{M.shape[1]})")
        ax.set_xlabel("column (class)")
        ax.set_ylabel("row (input)")
        fig.colorbar(image, ax=ax, shrink=0.8, format="%.2g")
    return fig


def save(fig: Any, path: Path | str) -> Path:
    """Write a figure as PNG (100 dpi) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def render_run(stage: Path | str, *, parallel: bool = False) -> list[Path]:
    """Draw a run's figures from its staging directory (see :mod:`numgrad.tracking`).

    Reads ``artifacts/history.csv`` and ``figure_input.npz`` (W_init, W_final,
    gradient, each optional) and writes ``artifacts/figures/*.png``. ``parallel``
    draws each figure in a forked child (only in the single-threaded helper process).
    """
    stage = Path(stage)
    out = stage / "artifacts" / "figures"
    jobs: list[tuple[Path, Callable[[], Any]]] = []
    history = stage / "artifacts" / "history.csv"
    if history.is_file():
        table = np.loadtxt(history, delimiter=",", skiprows=1, usecols=(0, 1, 2), ndmin=2)
        if table.size:
            steps = table[:, 0].astype(np.int64)
            jobs.append((out / "loss.png", lambda: curve(steps, table[:, 1], "loss")))
            jobs.append((out / "grad_norm.png", lambda: curve(steps, table[:, 2], "grad_norm")))
    arrays_file = stage / "figure_input.npz"
    if arrays_file.is_file():
        with np.load(arrays_file) as arrays:
            panels = {k: arrays[k] for k in ("W_init", "W_final", "gradient") if k in arrays}
        if panels:
            jobs.append((out / "weights.png", lambda: heatmaps(panels)))
    out.mkdir(parents=True, exist_ok=True)
    if parallel and hasattr(os, "fork") and len(jobs) > 1:
        _draw_forked(jobs)
    else:
        for path, draw in jobs:
            save(draw(), path)
    return [path for path, _ in jobs]


def _draw_forked(jobs: list[tuple[Path, Callable[[], Any]]]) -> None:
    """One child per figure but the first, drawn here: the figures take turns no longer."""
    children = []
    for path, draw in jobs[1:]:
        pid = os.fork()
        if pid == 0:  # the child: draw, and leave without running any exit handler
            code = 1
            try:
                save(draw(), path)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append((pid, path))
    save(jobs[0][1](), jobs[0][0])
    for pid, path in children:
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            raise RuntimeError(f"drawing {path.name} failed")


def _envelope(steps: np.ndarray, values: np.ndarray, buckets: int = 1000) -> tuple:
    """At most ``2 * buckets + 2`` points: the ends and each bucket's minimum and maximum.

    A 640-pixel-wide curve cannot show more, and spikes survive (plain striding
    would drop them); drawing 20,000 points instead costs the run a visible wait.

    Examples
    --------
    >>> s, v = _envelope(np.arange(10_000), np.sin(np.arange(10_000)), buckets=100)
    >>> len(s) <= 202, bool(v.max() == np.sin(np.arange(10_000)).max())
    (True, True)
    """
    n = len(values)
    if n <= 2 * buckets or not np.isfinite(values).all():
        return steps, values
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    lo = np.minimum.reduceat(values, edges[:-1])
    hi = np.maximum.reduceat(values, edges[:-1])
    keep = set()
    for start, stop, a, b in zip(edges[:-1], edges[1:], lo, hi, strict=True):
        chunk = values[start:stop]
        keep.add(start + int(np.argmax(chunk == a)))
        keep.add(start + int(np.argmax(chunk == b)))
    keep.update((0, n - 1))
    index = np.fromiter(sorted(keep), dtype=np.int64)
    return steps[index], values[index]


def _warm_up() -> None:
    """Import and exercise matplotlib once (fonts, Agg) before the run needs it."""
    import io

    fig = curve(np.arange(3), np.array([3.0, 2.0, 1.0]), "warm-up")
    fig.savefig(io.BytesIO(), format="png", dpi=20)


def main() -> int:
    """Helper-process entry: warm up, wait for a staging directory, draw, exit."""
    import select

    os.nice(5)  # background work: the run itself goes first when CPUs are busy
    import matplotlib.backends.backend_agg  # noqa: F401 - the slow part, up front

    if not select.select([sys.stdin], [], [], 0)[0]:
        _warm_up()  # nothing asked yet (a longer run): load fonts while waiting
    line = sys.stdin.readline().strip()
    if not line:
        return 0  # the run ended without asking (or its process died): nothing to do
    render_run(Path(line), parallel=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown of matplotlib: the run is waiting
