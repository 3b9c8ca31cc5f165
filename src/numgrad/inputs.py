"""Validation of a net's inputs: W, x and t to the engines' form, or an error naming the input.

Every check here runs once per call of :class:`numgrad.net.SimpleNet`, never in the
engines' hot loops. Messages say what is wrong with the numbers involved (for a
person); :attr:`InputError.input` says which input to fix (for a program).
"""

from __future__ import annotations

import numpy as np

from numgrad.precision import DTYPES


class InputError(ValueError):
    """An input the net cannot use; :attr:`input` names which one.

    ``"x"``
        x alone: not real numbers, not 1-D or 2-D, no samples, non-finite values.
    ``"t"``
        t alone: not labels or one-hot rows, a label that is not an integer or is out
        of range, a row that is not one-hot; also a number of targets other than x's
        number of samples (x defines the batch, t must give one target per sample).
    ``"shape"``
        the net's shape: ``W`` not 2-D, empty or with fewer than 2 classes (columns),
        x's number of features other than W's rows, t's number of classes (one-hot
        columns) other than W's columns.
    ``"W"``
        W's values: not real numbers, not finite, or beyond float32's range when the
        net computes in float32 (the same goes for x, as ``"x"``).

    Examples
    --------
    >>> from numgrad.net import SimpleNet
    >>> try:
    ...     SimpleNet(np.zeros((2, 3))).prepare([1.0, 2.0, 3.0], 0)
    ... except InputError as error:
    ...     print(error.input, "|", error)
    shape | x has 3 features (columns) but W has 2 rows
    """

    def __init__(self, message: str, input: str) -> None:
        super().__init__(message)
        self.input = input

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keep .input when the error crosses a process boundary (sweep workers pickle it).
        return type(self), (str(self), self.input)


def as_weights(W: np.ndarray, dtype: np.dtype = np.float64) -> np.ndarray:
    """``W`` as a fresh C-contiguous array of ``dtype``, after checking it can be a classifier's.

    Raises :class:`InputError` unless ``W`` is a finite 2-D array of real numbers with
    at least one row and two columns: a classifier needs two classes (with one, every
    probability is 1 and the loss does not depend on ``W``). ``dtype`` is float32 or
    float64 (else ValueError).

    Examples
    --------
    >>> as_weights([[1, 2], [3, 4]])
    array([[1., 2.],
           [3., 4.]])
    """
    W = np.asarray(W)
    if W.dtype.kind not in ("i", "u", "f"):
        raise InputError(f"W must hold real numbers (integer or float), got dtype {W.dtype}", "W")
    if W.ndim != 2:
        raise InputError(
            f"W must be 2-D (n_inputs, n_classes), got {W.ndim}-D with shape {W.shape}", "shape"
        )
    if W.size == 0:
        raise InputError(f"W must be non-empty, got shape {W.shape}", "shape")
    if W.shape[1] < 2:
        raise InputError(
            f"W has 1 column but a classifier needs at least 2 classes, got shape {W.shape}",
            "shape",
        )
    if not np.isfinite(W).all():
        bad = np.argwhere(~np.isfinite(W))
        raise InputError(
            f"W has {len(bad)} non-finite value(s) (nan or inf), first at W[{bad[0][0]}, "
            f"{bad[0][1]}] = {W[tuple(bad[0])]}",
            "W",
        )
    return _cast(W.copy(), dtype, "W")  # a fresh C-contiguous copy


def as_samples(
    x: np.ndarray, n_inputs: int, dtype: np.dtype = np.float64
) -> tuple[np.ndarray, bool]:
    """``x`` as a C-contiguous (batch, n_inputs) array of ``dtype``, and whether it was 1-D.

    Examples
    --------
    >>> as_samples([0.6, 0.9], 2)
    (array([[0.6, 0.9]]), True)
    """
    x = np.asarray(x)
    if x.dtype.kind not in ("i", "u", "f"):
        raise InputError(f"x must hold real numbers (integer or float), got dtype {x.dtype}", "x")
    if x.ndim not in (1, 2):
        raise InputError(
            f"x must be 1-D (one sample) or 2-D (batch, features), got {x.ndim}-D "
            f"with shape {x.shape}",
            "x",
        )
    single = x.ndim == 1
    x2d = np.ascontiguousarray(x.reshape(1, x.size) if single else x)
    if x2d.shape[1] != n_inputs:
        raise InputError(
            f"x has {x2d.shape[1]} features (columns) but W has {n_inputs} rows", "shape"
        )
    if len(x2d) == 0:
        raise InputError("empty batch: x has 0 samples (rows)", "x")
    if not np.isfinite(x2d).all():
        bad = np.argwhere(~np.isfinite(x2d))
        sample, feature = bad[0]
        raise InputError(
            f"x has {len(bad)} non-finite value(s) (nan or inf), first at sample "
            f"{sample}, feature {feature}: {x2d[sample, feature]}",
            "x",
        )
    return _cast(x2d, dtype, "x"), single


def _cast(a: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Finite ``a`` as ``dtype``, without a copy if it is already; beyond its range: an error."""
    if np.dtype(dtype) not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    if a.dtype == dtype:
        return a
    with np.errstate(over="ignore"):  # checked just below
        cast = a.astype(dtype)
    if not np.isfinite(cast).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(cast))[0])
        where = f"sample {index[0]}, feature {index[1]}" if name == "x" else f"W{list(index)}"
        raise InputError(
            f"{name} has {np.count_nonzero(~np.isfinite(cast))} value(s) beyond the range of "
            f"{np.dtype(dtype)} (max {np.finfo(dtype).max:.3g}), first at {where}: {a[index]:g}",
            name,
        )
    return cast


def as_labels(t: np.ndarray, n_classes: int, single: bool) -> np.ndarray:
    """Integer labels, shape (batch,), from labels or one-hot rows.

    ``single`` says that ``x`` was one 1-D sample: then a 1-D ``t`` is its one-hot
    row, unless it holds a single label.

    Examples
    --------
    >>> as_labels([0, 0, 1], 3, single=True), as_labels([[0, 1, 0], [1, 0, 0]], 3, False)
    (array([2]), array([1, 0]))
    """
    t = np.asarray(t)
    if t.ndim > 2:
        raise InputError(
            f"t must be labels (1-D) or one-hot rows (2-D), got {t.ndim}-D with shape {t.shape}",
            "t",
        )
    if single and t.ndim == 1 and t.size != 1:
        t = t.reshape(1, t.size)
    if t.ndim == 2:
        return _labels_from_one_hot(t, n_classes)
    return _checked_labels(t.ravel(), n_classes)


def _labels_from_one_hot(t: np.ndarray, n_classes: int) -> np.ndarray:
    if t.shape[1] != n_classes:
        raise InputError(
            f"t has {t.shape[1]} classes (columns of one-hot rows) but W has "
            f"{n_classes} columns (classes)",
            "shape",
        )
    if t.dtype.kind not in ("b", "i", "u", "f"):
        raise InputError(f"one-hot t must hold numbers, got dtype {t.dtype}", "t")
    # A one-hot row has a single 1 and zeros elsewhere (nan fails both tests).
    is_one_hot = ((t == 0) | (t == 1)).all(axis=1) & ((t == 1).sum(axis=1) == 1)
    if not is_one_hot.all():
        row = int(np.flatnonzero(~is_one_hot)[0])
        raise InputError(
            f"t row {row} is not one-hot (exactly one 1, zeros elsewhere): {t[row]}", "t"
        )
    return np.argmax(t, axis=1).astype(np.int64)


def _checked_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if labels.dtype.kind == "f":
        integral = np.isfinite(labels) & (labels == np.round(labels))
        if not integral.all():
            index = int(np.flatnonzero(~integral)[0])
            raise InputError(
                f"labels must be integers, but t[{index}] = {labels[index]} is not", "t"
            )
    elif labels.dtype.kind not in ("i", "u"):
        raise InputError(
            f"labels must be integers (or one-hot rows), got dtype {labels.dtype}", "t"
        )
    out_of_range = (labels < 0) | (labels >= n_classes)
    if out_of_range.any():
        index = int(np.flatnonzero(out_of_range)[0])
        raise InputError(
            f"label {labels[index]:g} at t[{index}] is out of range: W has {n_classes} "
            f"classes, so labels must be in 0..{n_classes - 1}",
            "t",
        )
    return labels.astype(np.int64)
