"""A blank figure on an Agg canvas, and saving it as PNG: what every numgrad figure uses.

No ``pyplot``: a :class:`~matplotlib.figure.Figure` with its own Agg canvas needs no
global figure registry and no GUI backend, and imports faster. matplotlib itself is
imported when the first figure is made, never when numgrad is imported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches with an Agg canvas.

    Examples
    --------
    >>> fig = new_figure(4, 3)
    >>> type(fig.canvas).__name__
    'FigureCanvasAgg'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of layout="constrained": the solver doubles the drawing time.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.15, top=0.88, wspace=0.45)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path | str) -> Path:
    """Write a figure as PNG (100 dpi), creating its folder; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # zlib level 1: a quarter of the encoding time of the default 6 for files ~1.5x larger
    # (tens of kB); a sweep draws three figures per job.
    fig.savefig(path, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    return path


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Draw without warnings: values near the float limit (W of 1e308, lr=1e308)
    overflow matplotlib's colour and log-axis transforms, which say so on stderr.
    A figure is best effort; the numbers themselves are in the run's files."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield
