"""The training data as an MLflow dataset input: name, digest, source, schema, profile.

The name and the source file are the data source's (:mod:`numgrad.data`); the rest is
plain numpy, hashlib and json: the record goes into the run's
journal (kind ``input``) before any store is contacted, offline runs included, and
the uploader (:mod:`numgrad.tracking.uploader`) hands its strings to MLflow unchanged. The
``source``, ``schema`` and ``profile`` strings are those ``mlflow.data.from_numpy``
writes (a test compares them). The digest is numgrad's own: 8 hex digits of a
SHA-256 over the dtype, shape and bytes of ``x`` and ``t``, so that any change of
any value changes it (MLflow's hashes only the first 10,000 values, and needs pandas).

Examples
--------
>>> x, t = np.array([[0.6, 0.9]]), np.array([2])
>>> record = dataset_record(x, t, name="article", source=None)
>>> record["name"], record["digest"], record["source_type"], record["profile"]
('article', 'e0b90cd2', 'code', '{"features_shape": [1, 2], "features_size": 2, \
"features_nbytes": 16, "targets_shape": [1], "targets_size": 1, "targets_nbytes": 8}')
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from numgrad import data

CONTEXT = "training"  # the input tag mlflow.data.context: the UI's badge
EVALUATION = "evaluation"  # the held-out part's (data.test_fraction)
SOURCE_NAME = "numgrad"


def dataset_name(data_cfg: Any, seed: int) -> str:
    """The name a reviewer sees in the runs table's Dataset column: the source's own.

    ``article`` (the book's sample; ``article(custom)`` for other inline data),
    ``blobs(seed=7,n=60)`` (with ``spread`` when it is not 1), ``iris`` (with the
    scaling when it is not ``rms``), or the file's name for ``data=file``. Data that
    differ under one name (another ``net.shape`` for blobs) differ in the digest.

    Examples
    --------
    >>> from omegaconf import OmegaConf
    >>> from numgrad.data.blobs import BlobsData
    >>> from numgrad.data.file import FileData
    >>> dataset_name(OmegaConf.structured(BlobsData(n_samples=60)), seed=7)
    'blobs(seed=7,n=60)'
    >>> dataset_name(OmegaConf.structured(FileData(path="d/my.csv")), 0)
    'my.csv'
    """
    return data.dataset_name(data_cfg, seed)


def dataset_source(data_cfg: Any) -> Path | None:
    """The file the data came from (iris's shipped CSV, ``data.path``); None if made in code."""
    return data.dataset_source(data_cfg)


def dataset_record(x: np.ndarray, t: np.ndarray, *, name: str, source: Path | None) -> dict:
    """The fields of MLflow's ``Dataset`` entity for features ``x`` and labels ``t``."""
    if source is None:  # what mlflow.data.code_dataset_source.CodeDatasetSource writes
        source_type = "code"
        spec: dict[str, Any] = {"tags": {"mlflow.source.name": SOURCE_NAME, "numgrad.data": name}}
    else:  # LocalArtifactDatasetSource: shown as its path in the dataset drawer
        source_type, spec = "local", {"uri": str(source)}
    schema = {"mlflow_tensorspec": {"features": _tensor_spec(x), "targets": _tensor_spec(t)}}
    profile = {
        "features_shape": list(x.shape), "features_size": int(x.size),
        "features_nbytes": int(x.nbytes), "targets_shape": list(t.shape),
        "targets_size": int(t.size), "targets_nbytes": int(t.nbytes),
    }  # fmt: skip
    return {
        "name": name, "digest": digest(x, t), "source_type": source_type,
        "source": json.dumps(spec), "schema": json.dumps(schema), "profile": json.dumps(profile),
    }  # fmt: skip


def digest(*arrays: np.ndarray) -> str:
    """8 hex digits of SHA-256 over each array's dtype, shape and bytes (no copy if contiguous).

    Examples
    --------
    >>> digest(np.zeros(3)) == digest(np.zeros(3)), digest(np.zeros(3)) == digest(np.zeros(4))
    (True, False)
    """
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    return h.hexdigest()[:8]


def _tensor_spec(a: np.ndarray) -> str:
    """An MLflow tensor schema (JSON in JSON) for ``a``: any number of rows."""
    spec = {"type": "tensor", "tensor-spec": {"dtype": a.dtype.name, "shape": [-1, *a.shape[1:]]}}
    return json.dumps([spec])
