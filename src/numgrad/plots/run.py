"""Figures of one run: the loss and gradient-norm curves, and heatmaps of the weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.plots.figure import new_figure, quietly, save

CLIP = 1e300  # curves show values up to this magnitude
ANNOTATE_MAX = 36  # matrices with at most this many values get them written in the cells
MESH_MAX = 4096  # matrices with more cells are drawn as an image (see _cells)


def draw_run(
    out_dir: Path,
    steps: Sequence[int],
    loss: Sequence[float],
    grad_norm: Sequence[float],
    weights: Mapping[str, np.ndarray | None],
) -> list[Path]:
    """Write ``loss.png``, ``grad_norm.png`` (with any steps) and ``weights.png`` (with any
    matrix) into ``out_dir``; return their paths.

    The figures are kept for the next run this process draws: a sweep's jobs redraw the
    same axes with new data instead of building them again, 2.5x faster (the building
    and first layout of axes and ticks is most of a figure's cost). The PNGs are the
    same bytes as those of new figures.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     paths = draw_run(Path(d), [0, 1], [1.0, 0.5], [2.0, 1.0], {"W_init": np.eye(2)})
    ...     [p.name for p in paths]
    ['loss.png', 'grad_norm.png', 'weights.png']
    """
    written = []
    with quietly():
        steps = np.asarray(steps, dtype=np.int64)
        if steps.size:
            for name, values in (("loss", loss), ("grad_norm", grad_norm)):
                fig = _KEPT.figure(_CurveData(steps, values, name), _new_curve, _redraw_curve)
                written.append(save(fig, out_dir / f"{name}.png"))
        if any(m is not None for m in weights.values()):
            fig = _KEPT.figure(_PanelData(weights), _new_heatmaps, _redraw_heatmaps)
            written.append(save(fig, out_dir / "weights.png"))
    return written


def curve(steps: Sequence[int], values: Sequence[float], name: str) -> Any:
    """A per-step curve, on a log scale when every value is positive.

    Examples
    --------
    >>> fig = curve(np.arange(3), np.array([1.0, 0.5, 0.25]), "loss")
    >>> fig.axes[0].get_yscale(), fig.axes[0].get_xlabel()
    ('log', 'step')
    """
    return _new_curve(_CurveData(np.asarray(steps), values, name))


def heatmaps(panels: Mapping[str, np.ndarray | None]) -> Any:
    """Side-by-side heatmaps (e.g. W_init, W_final, gradient), colours centred on zero.

    ``None`` panels are left out; small matrices get their values written in the cells
    (a colour bar is drawn only for larger ones).

    Examples
    --------
    >>> fig = heatmaps({"W_init": np.eye(2), "W_final": None})
    >>> [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    ['W_init (2×2)']
    """
    return _new_heatmaps(_PanelData(panels))


class _CurveData:
    """What a curve shows; ``key`` is what a kept figure must share to be redrawn."""

    def __init__(self, steps: np.ndarray, values: Sequence[float], name: str) -> None:
        self.steps, values = envelope(steps, np.asarray(values, dtype=float))
        # Axis limits with margins around values near the float limit overflow: clip them.
        self.values = np.clip(values, -CLIP, CLIP)
        finite = self.values[np.isfinite(self.values)]
        self.log = bool(finite.size and (finite > 0).all() and finite.max() > finite.min())
        note = f" (values beyond ±{CLIP:g} clipped)" if (np.abs(values) > CLIP).any() else ""
        self.title = f"{name} per step{note}"
        self.key = ("curve", name, len(self.values) < 30, self.log)


def _new_curve(data: _CurveData) -> Any:
    from matplotlib.ticker import NullFormatter

    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.plot(data.steps, data.values, lw=1.2, marker="o" if data.key[2] else None, ms=3)
    if data.log:
        ax.set_yscale("log")
        # Labels on the major ticks only: within a decade, minor labels crowd the axis
        # (and writing them is half of a curve's drawing time).
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step")
    ax.set_ylabel(data.key[1])
    # A fixed title height: placing it around the tick labels costs a layout pass.
    ax.set_title(data.title, y=1.0, pad=6)
    ax.grid(True, alpha=0.3)
    return fig


def _redraw_curve(fig: Any, data: _CurveData) -> None:
    ax = fig.axes[0]
    ax.lines[0].set_data(data.steps, data.values)
    ax.relim()
    ax.autoscale_view()
    ax.title.set_text(data.title)


class _PanelData:
    """The matrices a heatmaps figure shows, clipped for colour, with their colour limits."""

    def __init__(self, panels: Mapping[str, np.ndarray | None]) -> None:
        self.panels = {}
        for name, value in panels.items():
            if value is None:
                continue
            M = np.atleast_2d(np.asarray(value, dtype=float))
            clipped = np.clip(M, -CLIP, CLIP)  # colour limits of ±1e308 overflow, like axes
            finite = np.abs(clipped[np.isfinite(M)])
            vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            shown = np.ma.masked_invalid(np.where(np.isfinite(M), clipped, np.nan))
            self.panels[name] = (M, shown, vmax)
        self.key = ("heatmaps", *((name, M.shape) for name, (M, _, _) in self.panels.items()))


def _cell_text(value: float, vmax: float) -> tuple[str, str]:
    dark = abs(value) > 0.6 * vmax  # white on the saturated ends of the map
    return f"{value:.3g}", "white" if dark else "black"


def _new_heatmaps(data: _PanelData) -> Any:
    n = max(len(data.panels), 1)
    fig = new_figure(4.2 * n, 3.4)
    fig.subplots_adjust(left=0.25 / n, right=1 - 0.12 / n, wspace=0.55)
    for i, (name, (M, shown, vmax)) in enumerate(data.panels.items()):
        ax = fig.add_subplot(1, n, i + 1)
        cells = _cells(ax, M.shape, shown, vmax)
        if M.size <= ANNOTATE_MAX:  # small enough to read the numbers: no colour scale needed
            for (r, c), value in np.ndenumerate(M):
                text, color = _cell_text(value, vmax)
                ax.text(c, r, text, ha="center", va="center", fontsize=8, color=color)
        else:
            fig.colorbar(cells, ax=ax, shrink=0.8, format="%.2g")
        if max(M.shape) <= 12:
            ax.set_xticks(range(M.shape[1]))
            ax.set_yticks(range(M.shape[0]))
        ax.set_title(f"{name} ({M.shape[0]}×{M.shape[1]})", y=1.0, pad=6)
        ax.set_xlabel("column (class)")
        if i == 0:
            ax.set_ylabel("row (input)")
    return fig


def _cells(ax: Any, shape: tuple[int, int], shown: np.ndarray, vmax: float) -> Any:
    """The coloured cells of a matrix, row 0 at the top, cell (r, c) centred on (c, r).

    A small matrix is a mesh of its cells: an image is resampled to the axes' pixels
    at every draw, a quarter of a three-panel figure's drawing time, whatever its size.
    A large one stays an image, which costs no more per cell."""
    rows, cols = shape
    style = dict(cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    if rows * cols > MESH_MAX:
        return ax.imshow(shown, aspect="auto", interpolation="nearest", **style)
    mesh = ax.pcolormesh(np.arange(cols + 1) - 0.5, np.arange(rows + 1) - 0.5, shown, **style)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    return mesh


def _redraw_heatmaps(fig: Any, data: _PanelData) -> None:
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for ax, (M, shown, vmax) in zip(axes, data.panels.values(), strict=True):
        cells = ax.images[0] if ax.images else ax.collections[0]
        (cells.set_data if ax.images else cells.set_array)(shown)
        cells.set_clim(-vmax, vmax)  # a colour bar follows its cells
        if M.size > ANNOTATE_MAX:
            continue
        for text, value in zip(ax.texts, M.ravel(), strict=True):  # written row by row
            label, color = _cell_text(value, vmax)
            text.set_text(label)
            text.set_color(color)


class _KeptFigures:
    """The last figures drawn in this process, by what they must share to be redrawn."""

    LIMIT = 8  # a sweep over net.shape makes one heatmaps figure per shape

    def __init__(self) -> None:
        self._figures: dict[tuple, Any] = {}

    def figure(self, data: Any, new: Any, redraw: Any) -> Any:
        fig = self._figures.pop(data.key, None)
        if fig is None:
            fig = new(data)
        else:
            _keep_label_places(fig)
            redraw(fig, data)
        self._figures[data.key] = fig  # most recently used last
        while len(self._figures) > self.LIMIT:
            del self._figures[next(iter(self._figures))]
        return fig


def _keep_label_places(fig: Any) -> None:
    """Leave the axis labels of a figure drawn before where its first drawing put them.

    Every drawing places an axis label beside its tick labels, measuring each one: a
    tenth of a redrawn figure's time. Where they cannot move, it need not: an x label
    sits under tick labels of one line of digits, always as high; a heatmap's y label
    beside the row numbers of its shape, the same in every figure of that shape. A
    curve's y label moves with its values' tick labels, and is left to matplotlib."""
    for ax in fig.axes:
        axes = (ax.xaxis, ax.yaxis) if ax.images or ax.collections else (ax.xaxis,)
        for axis in axes:
            label = axis.label
            if label.get_text():  # where the last drawing put it, to the last bit
                axis.set_label_coords(*label.get_position(), transform=label.get_transform())


_KEPT = _KeptFigures()


def forget_figures() -> None:
    """Drop the figures kept for redrawing (they hold a few MB of matplotlib objects)."""
    _KEPT.__init__()


def envelope(steps: np.ndarray, values: np.ndarray, buckets: int = 1000) -> tuple:
    """At most ``2 * buckets + 2`` points: the ends and each bucket's minimum and maximum.

    A 640-pixel-wide curve cannot show more, and spikes survive (plain striding
    would drop them); drawing 20,000 points instead costs the run a visible wait.

    Examples
    --------
    >>> s, v = envelope(np.arange(10_000), np.sin(np.arange(10_000)), buckets=100)
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
