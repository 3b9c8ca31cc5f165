"""Hydra override strings split into key and value: no Hydra, no MLflow, no tracking.

The command line's overrides name a run, say which values a sweep swept and which
extras change a rerun's experiment; all of them read ``key=value`` the same way, here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def parse_override(text: str) -> tuple[str, str | None, bool]:
    """``(key, value, deleted)`` of a Hydra override; ``value`` is None without ``=``.

    Examples
    --------
    >>> parse_override("+data.x=1"), parse_override("~net.W"), parse_override("data=iris")
    (('data.x', '1', False), ('net.W', None, True), ('data', 'iris', False))
    """
    key, sep, value = text.partition("=")
    key = key.lstrip("+")
    deleted = key.startswith("~")
    return key.lstrip("~"), (value if sep else None), deleted


def is_under(key: str, roots: Sequence[str]) -> bool:
    """True when ``key`` is one of ``roots`` or inside one (``hydra.run.dir``, ``hydra/launcher``).

    Examples
    --------
    >>> is_under("hydra/launcher", ["hydra"]), is_under("hydrant", ["hydra"])
    (True, False)
    """
    return any(key == root or key.startswith((root + ".", root + "/")) for root in roots)


def swept_values(overrides: Sequence[str]) -> dict[str, str]:
    """``{key: value}`` of the overrides that set a value, ``hydra.*`` left out.

    Examples
    --------
    >>> swept_values(["optimizer.lr=0.1", "hydra.run.dir=/x", "~net.W"])
    {'optimizer.lr': '0.1'}
    """
    out = {}
    for override in overrides:
        key, value, _ = parse_override(override)
        if value is not None and not is_under(key, ["hydra"]):
            out[key] = value
    return out


def varied_keys(jobs: Sequence[Mapping[str, str]]) -> list[str]:
    """The keys of jobs' :func:`swept_values` that take more than one value among them.

    A key every job sets alike (``data=blobs`` beside ``optimizer.lr=0.1,1``) is the
    sweep's context, not one of its axes; a single job's keys are all kept.

    Examples
    --------
    >>> varied_keys([{"data": "blobs", "seed": "0"}, {"data": "blobs", "seed": "1"}])
    ['seed']
    >>> varied_keys([{"data": "blobs"}])
    ['data']
    """
    keys = {key for job in jobs for key in job}
    return sorted(k for k in keys if len(jobs) == 1 or len({job.get(k) for job in jobs}) > 1)
