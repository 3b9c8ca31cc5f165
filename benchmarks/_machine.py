"""Shared by the benchmark scripts: a one-line description of the machine, and numgrad's
console scripts to start."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np


def machine() -> str:
    """One line: platform, CPU model, Python, numpy and BLAS threads."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            models = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = models[0] if models else cpu
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{pool['internal_api']} {pool.get('version') or ''} ({pool['num_threads']} threads)"
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        )
    except ImportError:
        blas_info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas_info['name']} {blas_info.get('version', '')} (threads: default)"
    return (
        f"Machine: {platform.platform()}, {cpu} ({os.cpu_count()} logical CPUs), "
        f"Python {platform.python_version()}, numpy {np.__version__}, BLAS {blas or 'unknown'}"
    )


def script(name: str) -> list[str]:
    """The console script ``name`` next to this interpreter (not a pyenv/asdf shim: no
    shell hop in the timings), as an argv prefix."""
    path = Path(sys.executable).parent / name
    if path.is_file():
        return [sys.executable, str(path)]
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed: pip install -e .")
    return [found]
