"""The held-out split: ``data.test_fraction`` of each class, drawn from the run's generator.

Stratified, so that the held-out set has the classes in the proportions of the whole:
class ``k`` with ``n_k`` samples gives ``round(test_fraction * n_k)`` of them (halves
round up), chosen by a permutation drawn from the run's generator, one class after
the other in label order. Both parts keep the samples' original order.
"""

from __future__ import annotations

import numpy as np

from numgrad.errors import ConfigError

FIELD = "data.test_fraction"


def check_fraction(fraction: float) -> None:
    """``0 <= test_fraction < 1``: some samples must stay for training.

    Examples
    --------
    >>> check_fraction(0.2)
    >>> check_fraction(1.0)
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid data.test_fraction=1.0: must be >= 0 and < 1
    """
    if not (0.0 <= fraction < 1.0):  # nan fails too
        raise ConfigError(FIELD, fraction, "must be >= 0 and < 1")


def held_out(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask over the samples: True for the held-out ones.

    ``labels`` are integer class indices (one per sample). Raises ConfigError when the
    fraction holds out no sample, or every sample.

    Examples
    --------
    >>> labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    >>> mask = held_out(labels, 0.4, np.random.default_rng(0))
    >>> int(mask.sum()), np.bincount(labels[mask]).tolist()
    (4, [2, 2])
    """
    mask = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        n_test = int(np.floor(fraction * len(members) + 0.5))
        mask[rng.permutation(members)[:n_test]] = True
    n_test = int(mask.sum())
    if n_test == 0:
        raise ConfigError(
            FIELD, fraction, f"holds out no sample of {len(labels)} (round(fraction x class size))"
        )
    if n_test == len(labels):
        raise ConfigError(FIELD, fraction, f"holds out all {len(labels)} samples: none to train on")
    return mask
