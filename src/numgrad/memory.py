"""How much memory a run needs, checked before anything is allocated.

A run that does not fit is not stopped by a ``MemoryError``: Linux overcommits, the
process grows until the kernel's OOM killer ends it (and whatever else it picks).
So the runner asks first, :func:`check_memory`, and refuses with a one-line
:class:`~numgrad.errors.ConfigError` naming the field that makes the run big.

Where the runner calls it::

    validate(cfg)
    check_memory(cfg)                 # before load_data: blobs allocate while loading
    x, t = load_data(cfg.data, shape, rng)
    check_memory(cfg, data=(x, t))    # a file's size is known only now; before SimpleNet

The estimate (:func:`required_bytes`) is an upper bound, calibrated against
tracemalloc's peak of the real pieces (``tests/test_memory.py``): the largest of

- loading: blobs hold their centres, two arrays of ``x``'s size and the labels;
- the initial weights: drawn in float64, then cast to ``gradient.dtype``;
- the descent: ``W`` and its copies (initial weights kept for tracking, the gradient
  held from the last step, the engine's result and its contiguous copy, the update),
  ``x`` as loaded plus its cast, two label arrays, and the engine's per-step
  temporaries: arrays of (samples, classes), per-sample vectors, fixed work blocks.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import numpy as np

from numgrad import data as sources
from numgrad.errors import ConfigError

#: W-sized arrays alive at the descent's peak, in the run's dtype, W_init and W_final
#: copies included. Calibrated on the cases of tests/test_memory.py with tracemalloc:
#: the estimate lies between 1.0x and 1.7x of the measured peak in all of them.
W_ARRAYS = 7
#: W-sized float64 arrays besides: the gradient check's float64 reference and its
#: difference, and in a float32 run the float64 copies (the draw of W0, casts).
CHECK_W64_ARRAYS, FLOAT32_W64_ARRAYS = 2, 2
#: (samples x classes) arrays alive at an engine's peak: the loss's logits and softmax,
#: the vectorized engine's exponentials, prefix sums, k, c and their terms (measured on
#: 300000 samples of 3 classes, per-sample vectors included: 8.7, 4.4 and 4.7).
BATCH_ARRAYS = {"vectorized": 12, "loop": 6, "analytic": 6}
#: Per-sample vectors (row indices, maxima, true-class terms) and the two label arrays.
SAMPLE_VECTORS = {"vectorized": 10, "loop": 4, "analytic": 4}
#: The vectorized engine's work blocks, (rows, classes, inputs) of up to 2**17 elements
#: (more when one row of classes is longer): three of them, and per-block cosh, sinh
#: and products.
WORK_BLOCKS, WORK_BLOCK_ELEMENTS = 6, 1 << 17
#: Python objects (step records, index tuples) beside the arrays.
FIXED_BYTES = 1 << 20
#: Kept aside for what comes after the check besides the arrays: importing MLflow maps
#: ~300 MB more, each of its threads ~70 MB (measured, VmSize).
RESERVE_BYTES = 512 << 20
#: Of the memory found available, the run may count on this fraction.
USABLE_FRACTION = 0.9

_LABEL_BYTES = 8  # labels are int64 whatever the float precision
_SOURCE_BYTES = 8  # data sources return float64; the runner casts to gradient.dtype
# (limit, usage) of a container's memory cgroup, v2 then v1.
_CGROUP_FILES = (
    ("memory.max", "memory.current"),
    ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
)


def required_bytes(
    shape: list[int],
    n_samples: int,
    *,
    method: str = "vectorized",
    itemsize: int = 8,
    check: bool = False,
) -> int:
    """Peak bytes of a run on ``n_samples`` samples with ``W`` of ``shape``.

    Parameters
    ----------
    shape : [n_inputs, n_classes]
        ``net.shape``.
    n_samples : int
        Rows of ``x``.
    method : {"vectorized", "loop", "analytic"}
        ``gradient.method``; the analytic check costs no more than these.
    itemsize : int
        Bytes per float of ``gradient.dtype`` (8 for float64, 4 for float32).
    check : bool
        ``gradient.check``: its float64 reference keeps W-sized copies besides.

    Examples
    --------
    >>> f"{required_bytes([100000, 100000], 60) / 1e9:.0f} GB"  # seven W of 80 GB, and more
    '561 GB'
    >>> required_bytes([2, 3], 1) < 2 << 20
    True
    """
    return max(_phases(shape, n_samples, method, itemsize, check))


def _phases(
    shape: list[int],
    n_samples: int,
    method: str,
    itemsize: int,
    check: bool,
    n_features: int | None = None,
) -> tuple[int, ...]:
    n_inputs, n_classes = shape
    weights = n_inputs * n_classes
    x = n_samples * n_inputs
    # A source that knows its features loads that many, whatever net.shape says (a
    # mismatch is refused once loaded); the others follow net.shape.
    loaded = n_samples * (n_features or n_inputs)
    loading = (2 * weights + 3 * loaded) * _SOURCE_BYTES + 2 * n_samples * _LABEL_BYTES
    initial = 2 * weights * _SOURCE_BYTES + weights * itemsize
    cast = x * itemsize if itemsize != _SOURCE_BYTES else 0  # x kept as loaded, and cast
    extra64 = (CHECK_W64_ARRAYS * check + FLOAT32_W64_ARRAYS * (itemsize != _SOURCE_BYTES)) * (
        weights * _SOURCE_BYTES
    )
    descent = (
        W_ARRAYS * weights * itemsize
        + extra64
        + x * _SOURCE_BYTES
        + cast
        + BATCH_ARRAYS[method] * n_samples * n_classes * itemsize
        + SAMPLE_VECTORS[method] * n_samples * _LABEL_BYTES
        + _work_elements(method, n_samples, n_inputs, n_classes) * itemsize
        + FIXED_BYTES
    )
    return loading, initial, descent


def _work_elements(method: str, n_samples: int, n_inputs: int, n_classes: int) -> int:
    if method != "vectorized":
        return 0
    block = min(max(WORK_BLOCK_ELEMENTS, n_classes), n_samples * n_classes * n_inputs)
    return WORK_BLOCKS * block


def available_bytes(mem_available: int | None = None, cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process can still allocate, with a margin kept aside.

    The smallest of: the kernel's available memory (``mem_available``, by default
    psutil's ``virtual_memory().available``, the kernel's ``MemAvailable``); the
    address-space limit (``ulimit -v``, ``RLIMIT_AS``) minus what the process maps
    already (psutil's ``vms``, the kernel's ``VmSize``); a container's cgroup limit
    minus its usage. Of that, :data:`USABLE_FRACTION` less :data:`RESERVE_BYTES`
    (never below 0).

    Examples
    --------
    >>> 0 < available_bytes() < 1 << 60
    True
    >>> available_bytes(8 << 30, Path("/no-cgroup")) == int((8 << 30) * 0.9) - (512 << 20)
    True
    """
    import psutil

    bounds = [psutil.virtual_memory().available if mem_available is None else mem_available]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        bounds.append(soft - psutil.Process().memory_info().vms)
    bounds.extend(_cgroup_room(cgroup))
    return max(0, int(min(bounds) * USABLE_FRACTION) - RESERVE_BYTES)


def _cgroup_room(cgroup: Path) -> list[int]:
    """Limit minus usage of the cgroup at ``cgroup`` (v2, else v1); [] without a limit."""
    for limit, usage in _CGROUP_FILES:
        try:
            text = (cgroup / limit).read_text().strip()
            if text == "max" or int(text) >= 1 << 60:  # v1 writes ~2**63 for no limit
                return []
            return [int(text) - int((cgroup / usage).read_text())]
        except (OSError, ValueError):
            continue
    return []


def check_memory(cfg: Any, data: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Refuse a run whose arrays cannot fit, before they are allocated.

    Call it right after :func:`~numgrad.config.validate`, and again with the
    ``(x, t)`` that :func:`~numgrad.data.load_data` returned, before building the
    net (a file's size is known only once it is read; what it holds is already
    allocated, and no longer counted). Both calls are cheap (no allocation).

    Raises
    ------
    ConfigError
        Naming ``net.shape`` when the weights make the run big, else the field
        that sets the number of samples (``data.n_samples``, ``data.path``,
        ``data.x``); e.g. ``invalid net.shape=[100000, 100000]: the run would need
        about 561 GB of memory, 23.1 GB are available``.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> from numgrad.config import NumgradConfig
    >>> from numgrad.data.blobs import BlobsData
    >>> cfg = OmegaConf.structured(NumgradConfig(data=BlobsData()))
    >>> check_memory(cfg)
    >>> cfg.net.shape = [10**6, 10**6]
    >>> check_memory(cfg)
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid net.shape=[1000000, 1000000]: the run would need ...
    """
    shape = [int(n) for n in cfg.net.shape]
    method = cfg.gradient.method.value
    itemsize = np.dtype(cfg.gradient.dtype.value).itemsize
    check = bool(cfg.gradient.check)
    n_samples, allocated = sample_count(cfg.data, data)
    sizes = sources.sizes(cfg.data)
    features = sizes.features if sizes is not None else None
    phases = _phases(shape, n_samples, method, itemsize, check, features)
    # Once loaded, the loading is over and what it holds is allocated (and available
    # memory has shrunk by as much): count only what is still to come.
    need = max(phases[1:]) - allocated if data is not None else max(phases)
    have = available_bytes()
    if need <= have:
        return
    field, value = _blame(cfg, shape, n_samples, method, itemsize, check)
    reason = f"the run would need about {_size(need)} of memory, {_size(have)} are available"
    raise ConfigError(field, value, reason)


def sample_count(
    data_cfg: Any, data: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[int, int]:
    """The number of samples a run will have, and the bytes of them already allocated.

    Before loading (``data`` None) from the source's sizes; a file not read yet counts
    as one sample: only its weights are checked then.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> from numgrad.data.article import ArticleData
    >>> sample_count(OmegaConf.structured(ArticleData(x=[[0.6, 0.9]] * 4, t=[0, 1, 2, 0])))
    (4, 0)
    """
    if data is not None:
        x, t = (np.asarray(a) for a in data)
        return (len(x) if x.ndim > 1 else 1), x.nbytes + t.nbytes
    sizes = sources.sizes(data_cfg)
    return (1 if sizes is None else sizes.samples), 0  # a file: the weights alone, now


def _blame(
    cfg: Any, shape: list[int], n_samples: int, method: str, itemsize: int, check: bool
) -> tuple[str, Any]:
    """The field that makes the run big: the weights, or the number of samples.

    ``x`` grows with samples times inputs: with few samples of many inputs, the
    shape is what makes it big (``net.shape=[10**9, 2]`` is not fixed by
    ``data.n_samples=60``).
    """
    by_shape = required_bytes(shape, 1, method=method, itemsize=itemsize, check=check)
    by_samples = (
        required_bytes(shape, n_samples, method=method, itemsize=itemsize, check=check) - by_shape
    )
    if by_samples <= by_shape or n_samples <= sum(shape):
        return "net.shape", shape
    # The field that sets the number of samples; a shipped table has none to change.
    return sources.blame(cfg.data, "samples") or ("net.shape", shape)


def _size(n_bytes: float) -> str:
    """Decimal units, three significant digits (``480 GB``, ``23.1 GB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n_bytes < 999.5:
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:,.0f} PB"
