"""Inputs ``x`` and targets ``t`` for an experiment, from the ``data`` config group.

Sources: ``article`` (inline arrays, by default the book's single sample),
``blobs`` (Gaussian class clusters drawn from the run's generator), ``iris``
(the 150-sample table shipped with the package) and ``file`` (``.npz``/``.csv``;
a CSV is UTF-8, with or without Excel's byte-order mark, read line by line).
Inputs are float64 whatever ``gradient.dtype`` says: the runner casts them.
Problems with a source are reported as :class:`~numgrad.config.ConfigError`.
"""

from __future__ import annotations

import codecs
import itertools
import zipfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.config import ConfigError, DataSource, Scaling


def load_data(
    data_cfg: Any, shape: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, t)`` for ``data_cfg``; ``shape`` is ``net.shape`` (blobs follow it).

    ``t`` is returned as given (one-hot rows or integer labels); the net checks it
    against its weights.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> from numgrad.config import DataConfig
    >>> cfg = OmegaConf.structured(DataConfig(x=[0.6, 0.9], t=[0, 0, 1]))
    >>> x, t = load_data(cfg, [2, 3], np.random.default_rng(0))
    >>> x.tolist(), t.tolist()
    ([0.6, 0.9], [0, 0, 1])
    """
    source = data_cfg.name
    if source == DataSource.article:
        if data_cfg.x is None:
            raise ConfigError("data.x", None, "data=article needs data.x and data.t")
        return _inline(data_cfg.x, "data.x"), _inline(data_cfg.t, "data.t")
    if source == DataSource.blobs:
        return make_blobs(data_cfg.n_samples, shape[0], shape[1], data_cfg.spread, rng)
    if source == DataSource.iris:
        x, t = _read_csv(resources.files("numgrad") / "datasets" / "iris.csv", "data=iris")
        return scale_features(x, data_cfg.scaling), t
    return _read_file(Path(data_cfg.path))


def make_blobs(
    n_samples: int, n_inputs: int, n_classes: int, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Gaussian clusters: class ``k`` around a standard-normal centre scaled by 3.

    Examples
    --------
    >>> x, t = make_blobs(6, 2, 3, 0.5, np.random.default_rng(0))
    >>> x.shape, t.tolist()
    ((6, 2), [0, 1, 2, 0, 1, 2])
    """
    centres = 3.0 * rng.standard_normal((n_classes, n_inputs))
    labels = np.arange(n_samples) % n_classes  # balanced, every class present when n >= k
    x = centres[labels] + spread * rng.standard_normal((n_samples, n_inputs))
    return x, labels


def scale_features(x: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Scale each column: ``rms`` to unit root-mean-square, ``zscore`` to zero mean and
    unit variance, ``none`` as is. All-zero or constant columns are left unscaled.

    SimpleNet has no bias term, so centred features (``zscore``) take away the offset
    it would need: on Iris a bias-free linear net then tops out near 85% training
    accuracy, while ``rms`` keeps the means and reaches about 95%.

    Examples
    --------
    >>> scale_features(np.array([[3.0, 1.0], [4.0, 3.0]]), Scaling.zscore).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    >>> scale_features(np.array([[3.0], [4.0]]), Scaling.rms).round(4).ravel().tolist()
    [0.8485, 1.1314]
    """
    if scaling == Scaling.none:
        return x
    if scaling == Scaling.zscore:
        x = x - x.mean(axis=0)
    size = np.sqrt(np.mean(x**2, axis=0))  # the std once centred
    return x / np.where(size > 0, size, 1.0)


def _inline(value: Any, field: str) -> np.ndarray:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    try:
        array = np.asarray(plain, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(field, plain, f"not a numeric array ({exc})") from None
    return _labels(array) if field == "data.t" else array


def _labels(values: np.ndarray) -> np.ndarray:
    """Labels (or one-hot rows) as int64 when every value is an integer that int64 holds.

    Anything else stays float64 as given, so that the net's checks report the value
    itself (``label 1e+308 ... out of range``) instead of what an overflowing cast makes
    of it (``-9.22337e+18``, with a RuntimeWarning).
    """
    exact = np.abs(values) <= 2.0**53  # every integer up to here is exact in float64
    if np.all(exact & (values == np.round(values))):
        return values.astype(np.int64)
    return values


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.is_dir():
        raise ConfigError("data.path", str(path), "is a directory, not a .npz or .csv file")
    if not path.is_file():
        raise ConfigError("data.path", str(path), "no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".csv":
        return _read_csv(path, str(path))
    raise ConfigError("data.path", str(path), "must end in .npz or .csv")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # np.load takes anything that is neither a zip nor a .npy for a pickle, and says
    # "pickled (object) data" about a text file: tell the user what the file is not.
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            "data.path", str(path), "not a .npz archive (np.savez writes one, with arrays x and t)"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "t") if k not in archive.files]
            if missing:
                found = ", ".join(archive.files) or "none"
                raise ConfigError("data.path", str(path), f"needs arrays x and t (found: {found})")
            x, t = archive["x"], archive["t"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("data.path", str(path), f"not a readable .npz ({exc})") from None
    # Like every other source: float64 inputs (the runner casts to gradient.dtype).
    return (np.ascontiguousarray(x, dtype=np.float64) if x.dtype.kind in "iuf" else x), t


_CSV_FORM = "needs rows of features followed by a label column"
_BLOCK_BYTES = 1 << 20  # lines decoded at a time


def _read_csv(path: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of features, the last column an integer label; an optional header line.

    The file is read line by line (never whole into memory), as UTF-8 with an optional
    byte-order mark.
    """
    try:
        with path.open("rb") as stream:
            lines = _text_lines(stream, name)
            first = next(lines, None)
            if first is None:
                raise ConfigError("data.path", name, f"is empty: {_CSV_FORM}")
            if not _is_numeric_row(first):
                first = next(lines, None)  # that was a header line: the column names
            if first is None:
                raise ConfigError("data.path", name, "has a header line but no data rows")
            try:
                table = np.loadtxt(
                    itertools.chain([first], lines), delimiter=",", ndmin=2, dtype=np.float64
                )
            except ValueError as exc:
                if isinstance(exc, ConfigError):  # from _text_lines, on a later line
                    raise
                raise ConfigError("data.path", name, f"not a numeric CSV ({exc})") from None
    except OSError as exc:
        raise ConfigError("data.path", name, f"cannot be read ({exc.strerror or exc})") from None
    if table.shape[1] < 2:
        raise ConfigError("data.path", name, _CSV_FORM)
    labels = table[:, -1]
    if not np.all(labels == np.round(labels)):
        raise ConfigError("data.path", name, "the last column must hold integer labels")
    # A contiguous x: the net would otherwise copy the strided view, and keep both.
    return np.ascontiguousarray(table[:, :-1]), _labels(labels)


def _text_lines(stream: Any, name: str) -> Iterator[str]:
    """The non-blank lines of a binary stream of UTF-8 text, without a byte-order mark.

    Decoded a block of lines at a time: per line, Python's overhead would make
    reading a large CSV several times slower than parsing it.
    """
    lines_before = 0
    while block := stream.readlines(_BLOCK_BYTES):
        raw = b"".join(block)
        if lines_before == 0 and raw.startswith(codecs.BOM_UTF8):
            # Excel's "CSV UTF-8" starts with one; left in, it turned the first row into
            # a "header" (not a number) that was silently dropped.
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line_start = raw.rfind(b"\n", 0, exc.start) + 1
            number = lines_before + raw.count(b"\n", 0, exc.start) + 1
            raise ConfigError(
                "data.path", name,
                f"not UTF-8 text: line {number}, byte {exc.start - line_start + 1} is "
                f"0x{raw[exc.start]:02x}, which UTF-8 cannot decode; save the file as UTF-8 "
                "(Excel: CSV UTF-8)",
            ) from None  # fmt: skip
        lines_before += len(block)
        # splitlines: also the lone "\r" line ends of old Mac files.
        yield from [line for line in text.splitlines() if line.strip()]


def _is_numeric_row(line: str) -> bool:
    try:
        [float(cell) for cell in line.split(",")]
    except ValueError:
        return False
    return True
