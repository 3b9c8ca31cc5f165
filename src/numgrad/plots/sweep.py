"""Figures of a sweep, drawn from its summary rows: returned (or saved), never shown.

A row is a mapping with ``params`` (the job's swept overrides, ``{"optimizer.lr":
"0.1", ...}``, values as typed on the command line), ``status`` and the numbers of
``sweep_summary.csv`` (``final_loss``, ``grad_rel_error``, ... as floats or None).
matplotlib is imported when the first figure is drawn (:mod:`numgrad.plots.figure`).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from numgrad.plots.figure import new_figure, quietly, save

H_KEY = "gradient.h"
MAX_SERIES = 8  # more groups than this are drawn as one unlabelled scatter
TITLE_CHARS = 72  # a title line that fits a 6.4-inch figure at 10 pt


def number(text: Any) -> float | None:
    """The value of an override as a float, None when it is not a number.

    Examples
    --------
    >>> number("1e-3"), number("abc"), number(None)
    (0.001, None, None)
    """
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def swept_numeric(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """The numeric parameters that take at least two values across the rows, sorted.

    Examples
    --------
    >>> rows = [{"params": {"optimizer.lr": "0.1", "data": "iris"}},
    ...         {"params": {"optimizer.lr": "1.0", "data": "iris"}}]
    >>> swept_numeric(rows)
    {'optimizer.lr': [0.1, 1.0]}
    """
    values: dict[str, set[float]] = {}
    numeric: dict[str, bool] = {}
    for row in rows:
        for key, text in row["params"].items():
            x = number(text)
            numeric[key] = numeric.get(key, True) and x is not None and math.isfinite(x)
            if x is not None:
                values.setdefault(key, set()).add(x)
    return {k: sorted(v) for k, v in values.items() if numeric[k] and len(v) >= 2}


def spans_decades(values: Iterable[float], decades: float = 2.0) -> bool:
    """True when all values are positive and max/min is at least ``10**decades``.

    Examples
    --------
    >>> spans_decades([1e-2, 1e-4]), spans_decades([0.1, 1.0]), spans_decades([0.0, 1.0])
    (True, False, False)
    """
    values = list(values)
    if not values or min(values) <= 0:
        return False
    return max(values) / min(values) >= 10**decades


def series(
    rows: Sequence[Mapping[str, Any]], key: str, metric: str
) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """``metric`` against ``key``, one list of points per value of the other swept keys.

    The label of a line names those values (``dtype=float32, scheme=forward``); rows
    without a number for ``key`` or a finite ``metric`` are counted, not drawn.

    Examples
    --------
    >>> rows = [{"params": {"gradient.h": h, "gradient.scheme": s}, "grad_rel_error": e}
    ...         for s, h, e in (("forward", "1e-8", 6e-9), ("complex", "1e-8", 1e-16),
    ...                         ("complex", "1e-20", None))]
    >>> series(rows, "gradient.h", "grad_rel_error")
    ({'scheme=forward': [(1e-08, 6e-09)], 'scheme=complex': [(1e-08, 1e-16)]}, 1)
    """
    keys = {k for row in rows for k in row["params"]} - {key}
    others = sorted(k for k in keys if len({str(r["params"].get(k)) for r in rows}) > 1)
    lines: dict[str, list[tuple[float, float]]] = {}
    left_out = 0
    for row in rows:
        x, y = number(row["params"].get(key)), row.get(metric)
        if x is None or y is None or not math.isfinite(y):
            left_out += 1
            continue
        label = ", ".join(f"{k.split('.')[-1]}={row['params'].get(k)}" for k in others)
        lines.setdefault(label, []).append((x, y))
    return lines, left_out


def metric_vs_parameter(
    rows: Sequence[Mapping[str, Any]], key: str, metric: str, *, title: str | None = None
) -> Any:
    """``metric`` against the swept parameter ``key``, one line per value of the others.

    Rows without a finite ``metric`` (failed jobs) are left out and counted in the
    title. The x axis is logarithmic when the values span two decades or more, the
    y axis when the metric's positive values do (an exact 0, which a log axis cannot
    show, is counted in the title).

    Examples
    --------
    >>> rows = [{"params": {"gradient.h": h}, "grad_rel_error": e}
    ...         for h, e in (("1e-1", 1e-3), ("1e-5", 1e-10), ("1e-9", 1e-6))]
    >>> fig = metric_vs_parameter(rows, "gradient.h", "grad_rel_error")
    >>> ax = fig.axes[0]
    >>> ax.get_xscale(), ax.get_yscale(), ax.get_xlabel()
    ('log', 'log', 'gradient.h')
    """
    lines, left_out = series(rows, key, metric)
    fig = new_figure(6.4, 4.0)
    fig.subplots_adjust(left=0.14, right=0.96, bottom=0.13, top=0.9)
    ax = fig.add_subplot()
    # Too many lines, or one point per line (a random search): one unlabelled scatter.
    merged = len(lines) > MAX_SERIES or (len(lines) > 1 and max(map(len, lines.values())) == 1)
    if merged:
        lines = {"": [p for points in lines.values() for p in points]}
    for label, points in sorted(lines.items()):
        points.sort()
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, "o" if merged else "o-", ms=4, lw=1.2, label=label or None)
    xs_all = [x for points in lines.values() for x, _ in points]
    ys_all = [y for points in lines.values() for _, y in points]
    if spans_decades(xs_all):
        ax.set_xscale("log")
    zeros = sum(y == 0 for y in ys_all)
    if spans_decades([y for y in ys_all if y != 0]) and min(ys_all) >= 0:
        ax.set_yscale("log")
    else:
        zeros = 0  # a linear axis shows them
    if any(label for label in lines):
        ax.legend(fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    notes = [f"{left_out} job{'s' * (left_out > 1)} without a value"] if left_out else []
    notes += [f"{zeros} exact zero{'s' * (zeros > 1)}"] if zeros else []
    # Wrapped to the figure's width (~80 characters at 10 pt), the notes on a line of their own.
    text = textwrap.fill(title or f"{metric} against {key}", TITLE_CHARS)
    text += f"\n({' and '.join(notes)} not shown)" if notes else ""
    fig.subplots_adjust(top=0.9 - 0.05 * text.count("\n"))
    ax.set_title(text, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def best_steps(rows: Sequence[Mapping[str, Any]]) -> str:
    """The h with the least gradient error on each line of the error-against-h figure.

    Empty unless h was swept with ``gradient.check=true``. One entry per line (per
    scheme, and dtype when that was swept too), for the sweep's description.

    Examples
    --------
    >>> rows = [{"params": {"gradient.h": h, "gradient.scheme": s}, "grad_rel_error": e}
    ...         for s, h, e in (("forward", "1e-8", 6e-9), ("forward", "1e-5", 4e-6),
    ...                         ("complex", "1e-8", 1.2e-16), ("complex", "1e-20", 1e-16))]
    >>> best_steps(rows)
    'Least gradient error per line: scheme=complex: h=1e-20 (rel. error 1e-16); \
scheme=forward: h=1e-08 (rel. error 6e-09).'
    """
    if H_KEY not in swept_numeric(rows):
        return ""
    lines, _ = series(rows, H_KEY, "grad_rel_error")
    if not lines:
        return ""
    best = {label: min(points, key=lambda p: (p[1], -p[0])) for label, points in lines.items()}
    parts = [
        f"{label or 'all jobs'}: h={h:.3g} (rel. error {error:.2g})"
        for label, (h, error) in sorted(best.items())
    ]
    return "Least gradient error per line: " + "; ".join(parts) + "."


def render_sweep(rows: Sequence[Mapping[str, Any]], out_dir: Path | str) -> list[Path]:
    """Write the sweep's figures as PNGs into ``out_dir`` and return their paths.

    ``final_loss_vs_<key>.png`` for every swept numeric parameter, and
    ``grad_rel_error_vs_gradient.h.png`` (the truncation/round-off trade-off) when h
    was swept with ``gradient.check=true``.
    """
    out_dir = Path(out_dir)
    with quietly():
        return _render(rows, out_dir)


def _render(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    written = []
    swept = swept_numeric(rows)
    for key in swept:
        if any(finite_number(r.get("final_loss")) for r in rows):
            fig = metric_vs_parameter(rows, key, "final_loss")
            written.append(save(fig, out_dir / f"final_loss_vs_{key}.png"))
    if H_KEY in swept and any(finite_number(r.get("grad_rel_error")) for r in rows):
        fig = metric_vs_parameter(
            rows, H_KEY, "grad_rel_error",
            title="gradient's relative error against h (truncation vs round-off)",
        )  # fmt: skip
        written.append(save(fig, out_dir / f"grad_rel_error_vs_{H_KEY}.png"))
    return written


def finite_number(value: Any) -> bool:
    """True for an int or float that is finite (a metric a failed job does not have).

    Examples
    --------
    >>> finite_number(0.5), finite_number(float("inf")), finite_number(None)
    (True, False, False)
    """
    return isinstance(value, float | int) and math.isfinite(value)
