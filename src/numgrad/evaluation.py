"""Loss and accuracy of ``W`` on whole sets: the held-out one, and a mini-batch run's training set.

Pure numpy, like the descent: the runner asks at the steps the tracking keeps and at
the end. The sets are cast to ``W``'s dtype once, as the descent casts its ``x``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from numgrad.gradient import accuracy_from_labels, loss_from_labels
from numgrad.precision import working_dtype


class Evaluation:
    """``evaluation(W)`` -> ``{"<name>_loss": ..., "<name>_accuracy": ...}`` for each set.

    ``sets`` maps a name (``test``, ``train``) to prepared ``(x, labels)``; with none,
    ``evaluation(W)`` is ``{}``.

    Examples
    --------
    >>> W = np.zeros((2, 3))
    >>> evaluation = Evaluation({"test": (np.array([[0.6, 0.9]]), np.array([2]))}, W)
    >>> {k: round(v, 6) for k, v in evaluation(W).items()}  # log 3, and a tie at class 0
    {'test_loss': 1.098612, 'test_accuracy': 0.0}
    """

    def __init__(self, sets: Mapping[str, tuple[np.ndarray, np.ndarray]], W: np.ndarray) -> None:
        dtype = working_dtype(W)
        self.sets = {name: (np.asarray(x, dtype=dtype), y) for name, (x, y) in sets.items()}

    def __bool__(self) -> bool:
        return bool(self.sets)

    def __call__(self, W: np.ndarray) -> dict[str, float]:
        out = {}
        with np.errstate(all="ignore"):  # a diverging W is the descent's to report
            for name, (x, labels) in self.sets.items():
                out[f"{name}_loss"] = loss_from_labels(W, x, labels)
                out[f"{name}_accuracy"] = accuracy_from_labels(W, x, labels)
        return out
