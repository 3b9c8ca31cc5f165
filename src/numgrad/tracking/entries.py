"""What each journal record may hold: every line is checked, field by field, on reading.

A journal is untrusted input (it may have been edited, or come from someone else):
:func:`check_entry` refuses a record with an unknown kind, a missing field, a value
of the wrong type, a number that is not finite, or a status MLflow would refuse. A
path a record names is checked by the uploader, against the journal's own folder.

Examples
--------
>>> check_entry({"seq": 1, "kind": "metrics", "metrics": [["loss", 0.5, 17, 0]]})
>>> check_entry({"seq": 2, "kind": "ack", "uri": "sqlite:///m.db", "seq_acked": "abc"})
Traceback (most recent call last):
...
ValueError: seq_acked='abc' is not a whole number
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from numgrad.tracking.weights import WeightsError, check_npy

FORMAT = 1  # the journal format this numgrad writes and reads
STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})  # what a run may end as
MAX_LINE_BYTES = 64 << 20  # a journal line is a flush's records; a longer one is not ours


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _str(value: Any) -> bool:
    return isinstance(value, str)


def _str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(_str(k) and _str(v) for k, v in value.items())


def _id(value: Any) -> bool:
    return _str(value) and value.isascii() and value.isalnum() and len(value) <= 64


def _metric_row(row: Any) -> bool:
    if not (isinstance(row, list) and len(row) == 4 and _str(row[0])):
        return False
    value = row[1]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and _int(row[2]) and _int(row[3])


def _metric_rows(value: Any) -> bool:
    return isinstance(value, list) and all(_metric_row(row) for row in value)


def _artifact_path(value: Any) -> bool:
    # MLflow's own rule (path_not_unique), checked here so that a path it would refuse
    # skips the journal before its run exists instead of stopping the upload part-way.
    if value is None or value == "":
        return True
    if not isinstance(value, str):
        return False
    norm = posixpath.normpath(value)
    return norm == value and norm != "." and not norm.startswith(("..", "/"))


def _status(value: Any) -> bool:
    return value in STATUSES


def _format(value: Any) -> bool:
    return value == FORMAT


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


_WHAT = {
    _int: "a whole number", _str: "a string",
    _str_map: "a mapping of strings to strings", _metric_rows: "a list of [key, finite value, "
    "timestamp, step] rows", _status: f"one of {sorted(STATUSES)}",
    _format: f"format {FORMAT} (this numgrad's)", _id: "an id (letters and digits)",
    _artifact_path: "a relative artifact path as MLflow keeps it (no '.', '..' or leading '/')",
}  # fmt: skip

# kind -> {field: check}; a field in ``_OPTIONAL`` may be absent.
_FIELDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "start": {"uri": _str, "experiment": _str, "run_name": _str, "start_time": _int,
              "tags": _str_map, "format": _format, "type": _str, "parent_journal": _str,
              "handed_over": lambda v: isinstance(v, bool), "key": _id},
    "params": {"params": _str_map},
    "tags": {"tags": _str_map},
    "metrics": {"metrics": _metric_rows},
    "artifact": {"local": _str, "path": _artifact_path},
    "input": {"dataset": lambda v: isinstance(v, dict) and all(_str(v.get(k)) for k in
                                                               ("name", "digest")),
              "context": _str},
    "model": {"weights": _str, "name": _str, "step": _int, "metrics": _metric_rows,
              "tags": _str_map, "requirements": lambda v: isinstance(v, list)
              and all(_str(r) for r in v)},
    "end": {"status": _status, "end_time": _optional(_int)},
    "run": {"uri": _str, "run_id": _id},
    "ack": {"uri": _str, "seq_acked": _int, "rows": _int},
}  # fmt: skip
_OPTIONAL = {"start": {"format", "type", "parent_journal", "handed_over", "tags", "key"},
             "ack": {"rows"}, "end": {"end_time"}}  # fmt: skip
DATA_KINDS = frozenset(_FIELDS) - {"run", "ack"}  # the run's own records; the rest is bookkeeping


class PathError(ValueError):
    """A file a journal names that is missing or lies outside the journal's folder."""


def check_entry(entry: Any) -> None:
    """Raise ValueError, saying which field and why, unless ``entry`` is a valid record."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    if not _int(entry.get("seq")):
        raise ValueError(f"seq={entry.get('seq')!r} is not a whole number")
    kind = entry.get("kind")
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise ValueError(f"unknown kind {kind!r}")
    optional = _OPTIONAL.get(kind, set())
    for name, check in fields.items():
        if name not in entry:
            if name in optional:
                continue
            raise ValueError(f"a {kind} record without {name!r}")
        if not check(entry[name]):
            what = _WHAT.get(check, "valid")
            raise ValueError(f"{name}={_short(entry[name])} is not {what}")


def check_start(entry: Mapping[str, Any]) -> None:
    """The first record must be the run's start."""
    if entry.get("kind") != "start":
        raise ValueError("the journal does not begin with the run's start record")


def check_paths(entry: Mapping[str, Any], base: Path) -> None:
    """The files a record names must exist inside ``base``, the journal's own folder
    (a model's weights must also be a loadable matrix); else :class:`PathError`."""
    if entry["kind"] == "artifact":
        inside(base, entry["local"], what="artifact")
    elif entry["kind"] == "model":
        try:
            check_npy(inside(base, entry["weights"], what="model weights"))
        except WeightsError as exc:
            raise PathError(f"the model weights {entry['weights']!r} {exc}") from None


def inside(base: Path, relative: str, *, what: str) -> Path:
    """``base / relative`` if it exists and lies inside ``base`` (symlinks resolved,
    a folder's every file too); else :class:`PathError` naming the path."""
    root = base.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise PathError(f"the {what} {relative!r} lies outside the journal's folder {root}")
    if not path.exists():
        raise PathError(f"the {what} {base / relative} recorded in the journal is missing")
    if path.is_dir():
        for file in path.rglob("*"):
            if not file.resolve().is_relative_to(root):
                raise PathError(
                    f"the {what} {relative!r} holds {file.name!r}, which lies outside the "
                    f"journal's folder {root}"
                )
    return path


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
