"""``data=file``: your own data, a ``.npz`` (arrays ``x`` and ``t``) or a ``.csv`` (label last)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numgrad.data.base import DataConfig
from numgrad.data.tables import read_csv, read_npz
from numgrad.errors import ConfigError

NAME = "file"


@dataclass
class FileData(DataConfig):
    name: str = NAME
    # Relative paths are taken from the directory numgrad was started in.
    path: str | None = None


Schema = FileData  # the interface's name for it (numgrad.data.base)


def check(cfg: Any) -> None:
    if not cfg.path:
        raise ConfigError("data.path", cfg.path, "data=file needs data.path=<file.npz|.csv>")


def sizes(cfg: Any) -> None:
    return None  # known once the file is read


def load(cfg: Any, shape: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    path = Path(cfg.path)
    if path.is_dir():
        raise ConfigError("data.path", str(path), "is a directory, not a .npz or .csv file")
    if not path.exists():
        raise ConfigError("data.path", str(path), "no such file")
    if not path.is_file():  # /dev/zero, a pipe: endless or not there to read twice
        raise ConfigError("data.path", str(path), "is not a regular file (.npz or .csv)")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path)
    if suffix == ".csv":
        return read_csv(path, str(path))
    raise ConfigError("data.path", str(path), "must end in .npz or .csv")


def dataset_name(cfg: Any, seed: int) -> str:
    """The file's name: ``my.csv``."""
    return Path(str(cfg.path)).name


def dataset_source(cfg: Any) -> Path:
    return Path(str(cfg.path)).absolute()


def blame(cfg: Any, part: str) -> tuple[str, Any]:
    return "data.path", cfg.path  # the file sets everything
