"""The files a run keeps in its ``artifacts/`` folder and uploads: inputs, weights, figures.

``config.yaml`` and ``overrides.yaml`` when the run starts; ``weights/W_final.npy`` and
``.json`` (a finished run) and ``figures/`` when it ends; ``weights/W_init.npy`` at the
start of the descent. ``history.csv`` is :mod:`numgrad.tracking.history`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.tracking.journal import JournalError
from numgrad.tracking.records import describe_error


def write_inputs(folder: Path, config: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """The resolved config and the command line's overrides, as YAML."""
    import yaml

    with open(folder / "config.yaml", "w") as f:
        yaml.safe_dump(dict(config), f, sort_keys=False)
    with open(folder / "overrides.yaml", "w") as f:
        yaml.safe_dump(list(overrides), f)


def save_initial(folder: Path, W_init: np.ndarray) -> None:
    """``weights/W_init.npy``, when the run starts."""
    try:
        np.save(folder / "weights" / "W_init.npy", W_init)
    except OSError as exc:  # disk full, a read-only dir: one line naming the file
        raise JournalError.writing(exc, str(folder / "weights" / "W_init.npy")) from None


def write_outputs(
    folder: Path,
    end: Mapping[str, Any] | None,
    history: Any,
    W_init: np.ndarray | None,
    *,
    figures: bool = True,
) -> str | None:
    """Final weights (when the run finished: ``end``) and, with ``figures``, the figures,
    which never fail a run: why they were not drawn is returned, for the caller to say
    once the run's end is written (a full disk is then said once, by the journal's error).

    ``history`` is the run's :class:`~numgrad.tracking.history.History` (the figures'
    columns), ``W_init`` the initial weights.
    """
    W_final = gradient = None
    if end is not None:
        W_final, gradient = end["W_final"], end["gradient"]
        np.save(folder / "weights" / "W_final.npy", W_final)
        with open(folder / "weights" / "W_final.json", "w") as f:
            json.dump({"shape": list(W_final.shape), "dtype": str(W_final.dtype),
                       "values": W_final.tolist()}, f)  # fmt: skip
    if not figures:
        return None
    try:
        from numgrad.plots.run import draw_run

        draw_run(
            folder / "figures", history.steps, history.loss, history.grad_norm,
            {"W_init": W_init, "W_final": W_final, "gradient": gradient},
        )  # fmt: skip
    except Exception as exc:
        return f"figures not drawn: {describe_error(exc)}"
    return None
