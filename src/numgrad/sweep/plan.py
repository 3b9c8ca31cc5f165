"""What a sweep is, read from its Hydra config: its name, its launcher and sweeper, its jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from numgrad.tracking.records import run_name_from, swept_values


def planned_jobs(
    sweeper: str, params: Mapping[str, str], overrides: Sequence[str]
) -> list[list[str]] | None:
    """Every job's overrides, in Hydra's order, for the basic sweeper; None for others."""
    if sweeper != "basic":
        return None
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(
            [*(f"{k}={v}" for k, v in params.items()), *overrides]
        )
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # a sweep the basic sweeper will refuse itself, with its own message
        return None


def job_count(config: Any, planned: Sequence[Sequence[str]] | None) -> int | None:
    """How many jobs the sweep will launch, where its sweeper says so in advance: the
    basic sweeper's ``planned`` jobs, Optuna's ``n_trials``."""
    trials = OmegaConf.select(config, "hydra.sweeper.n_trials")
    return len(planned) if planned is not None else trials if isinstance(trials, int) else None


def short_target(target: Any) -> str:
    """``hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher`` -> ``joblib``.

    Examples
    --------
    >>> short_target("hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    'basic'
    """
    name = str(target or "").rsplit(".", 1)[-1]
    for suffix in ("Launcher", "Sweeper"):
        name = name.removesuffix(suffix)
    return name.lower() or "unknown"


def sweep_name(overrides: Sequence[str], params: Mapping[str, str], run_name: Any) -> str:
    """The parent run's name: ``sweep`` and the swept values as typed.

    Examples
    --------
    >>> sweep_name(["optimizer.lr=0.1,1.0", "gradient.h=1e-2,1e-4"], {}, None)
    'sweep lr=0.1,1.0 h=1e-2,1e-4'
    """
    if run_name:
        return f"{run_name} (sweep)"
    given = set(swept_values(overrides))  # a command-line override replaces the preset's param
    parts = [run_name_from([o]) for o in overrides]
    parts += [run_name_from([f"{k}={v}"]) for k, v in params.items() if k not in given]
    parts = [p for p in parts if p != "default"]
    name = "sweep " + (" ".join(parts) or "default")
    return name if len(name) <= 250 else name[:247] + "..."
