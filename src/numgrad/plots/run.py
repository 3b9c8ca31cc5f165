"""Figures of one run: the loss and gradient-norm curves, and heatmaps of the weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.plots.figure import new_figure, quietly, save

CLIP = 1e300  # curves show values up to this magnitude


def draw_run(
    out_dir: Path,
    steps: Sequence[int],
    loss: Sequence[float],
    grad_norm: Sequence[float],
    weights: Mapping[str, np.ndarray | None],
) -> list[Path]:
    """Write ``loss.png``, ``grad_norm.png`` (with any steps) and ``weights.png`` (with any
    matrix) into ``out_dir``; return their paths.

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
            written.append(save(curve(steps, loss, "loss"), out_dir / "loss.png"))
            written.append(save(curve(steps, grad_norm, "grad_norm"), out_dir / "grad_norm.png"))
        if any(m is not None for m in weights.values()):
            written.append(save(heatmaps(weights), out_dir / "weights.png"))
    return written


def curve(steps: Sequence[int], values: Sequence[float], name: str) -> Any:
    """A per-step curve, on a log scale when every value is positive.

    Examples
    --------
    >>> fig = curve(np.arange(3), np.array([1.0, 0.5, 0.25]), "loss")
    >>> fig.axes[0].get_yscale(), fig.axes[0].get_xlabel()
    ('log', 'step')
    """
    steps, values = envelope(np.asarray(steps), np.asarray(values, dtype=float))
    # Axis limits with margins around values near the float limit overflow: clip them.
    clipped = np.clip(values, -CLIP, CLIP)
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, clipped, lw=1.2, marker="o" if len(values) < 30 else None, ms=3)
    finite = clipped[np.isfinite(clipped)]
    if finite.size and (finite > 0).all() and finite.max() > finite.min():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(name)
    note = f" (values beyond ±{CLIP:g} clipped)" if (np.abs(values) > CLIP).any() else ""
    ax.set_title(f"{name} per step{note}")
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
    fig = new_figure(4.2 * n, 3.4)
    fig.subplots_adjust(left=0.25 / n, right=1 - 0.12 / n, wspace=0.55)
    for i, (name, M) in enumerate(shown.items()):
        ax = fig.add_subplot(1, n, i + 1)
        shown_M = np.clip(M, -CLIP, CLIP)  # colour limits of ±1e308 overflow, like axes
        finite = np.abs(shown_M[np.isfinite(M)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        image = ax.imshow(
            np.ma.masked_invalid(np.where(np.isfinite(M), shown_M, np.nan)), cmap="RdBu_r",
            vmin=-vmax, vmax=vmax,
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
