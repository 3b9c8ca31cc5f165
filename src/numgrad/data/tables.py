"""Reading data files: CSV line by line, ``.npz`` archives, labels as int64 where exact.

Shared by the ``file`` and ``iris`` sources. A CSV is UTF-8, with or without Excel's
byte-order mark, rows of features followed by an integer label column, an optional
header line; it is read line by line, never whole into memory. Problems name the
file as ``data.path``.
"""

from __future__ import annotations

import codecs
import itertools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.errors import ConfigError


def labels(values: np.ndarray) -> np.ndarray:
    """Labels (or one-hot rows) as int64 when every value is an integer that int64 holds.

    Anything else stays float64 as given, so that the net's checks report the value
    itself (``label 1e+308 ... out of range``) instead of what an overflowing cast makes
    of it (``-9.22337e+18``, with a RuntimeWarning).

    Examples
    --------
    >>> labels(np.array([2.0, 0.0])).dtype.name, labels(np.array([0.5])).dtype.name
    ('int64', 'float64')
    """
    exact = np.abs(values) <= 2.0**53  # every integer up to here is exact in float64
    if np.all(exact & (values == np.round(values))):
        return values.astype(np.int64)
    return values


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``t`` of a ``.npz`` archive; ``x`` as float64 when numeric."""
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


def read_csv(path: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
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
    column = table[:, -1]
    if not np.all(column == np.round(column)):
        raise ConfigError("data.path", name, "the last column must hold integer labels")
    # A contiguous x: the net would otherwise copy the strided view, and keep both.
    return np.ascontiguousarray(table[:, :-1]), labels(column)


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
