"""A weight matrix read back from a ``.npy`` file: its header checked before it is loaded.

A ``W_final.npy`` from a journal or a store is untrusted: its header could claim a
shape of billions of elements, and ``np.load`` would try to allocate them. Here the
header alone is read (numpy's own ``numpy.lib.format`` parser), the file's size must
match it, and only a float matrix of a bounded size is loaded.

Examples
--------
>>> import tempfile, numpy as np
>>> with tempfile.TemporaryDirectory() as d:
...     np.save(f"{d}/W.npy", np.eye(2))
...     load_weights(Path(d) / "W.npy").tolist()
[[1.0, 0.0], [0.0, 1.0]]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib import format as npy

MAX_ELEMENTS = 1 << 28  # 2 GiB of float64: far beyond any W numgrad trains
HEADER_BYTES = 10_000  # numpy's own bound on a header it parses
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class WeightsError(ValueError):
    """A weights file that is not a float matrix numgrad can load; the message says why,
    to follow the file's name."""


def check_npy(path: Path, *, max_elements: int = MAX_ELEMENTS) -> tuple[list[int], np.dtype]:
    """The shape and dtype a ``.npy`` file's header declares, checked against the file.

    Raises :class:`WeightsError` for a file that is not ``.npy``, not a float32/float64
    matrix, larger than ``max_elements``, or whose size does not match its header.
    """
    try:
        with open(path, "rb") as f:
            version = npy.read_magic(f)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _fortran, dtype = read(f, max_header_size=HEADER_BYTES)
            data_at = f.tell()
    except (OSError, ValueError, SyntaxError) as exc:
        raise WeightsError(f"is not a readable .npy file ({exc})") from None
    if len(shape) != 2 or dtype not in FLOATS:
        raise WeightsError(
            f"{path.name} is not a float matrix: {dtype} array of shape {list(shape)}"
        )
    elements = int(np.prod(shape, dtype=object))
    if elements > max_elements:
        raise WeightsError(
            f"declares shape {list(shape)} ({elements:,} elements): more than "
            f"the {max_elements:,} expected"
        )
    expected = data_at + elements * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise WeightsError(
            f"holds {size:,} bytes, but its header (shape {list(shape)}, {dtype}) "
            f"means {expected:,}"
        )
    return list(shape), dtype


def load_weights(path: Path, *, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """The matrix in ``path`` once :func:`check_npy` accepts it (no pickles, ever)."""
    check_npy(path, max_elements=max_elements)
    return np.load(path, allow_pickle=False)
