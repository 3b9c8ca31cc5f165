"""What a sweep is, read from its Hydra config: its name, its launcher and sweeper, its jobs."""

from __future__ import annotations

import itertools
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from numgrad.overrides import swept_values
from numgrad.tracking.records import fit_tag, run_name_from


def planned_jobs(
    sweeper: str, params: Mapping[str, str], overrides: Sequence[str]
) -> list[list[str]] | None:
    """Every job's overrides, in Hydra's order, for the basic sweeper; None for others.

    The basic sweeper's own split is private to Hydra (``BasicSweeper.split_arguments``);
    this is the same product from Hydra's public override parser: one list of values per
    key, in the order the keys first appear (a later override of a key replaces the
    earlier one's values), the last key varying fastest.
    ``test_sweep_plan.py::test_planned_jobs_match_the_basic_sweepers_own_split`` holds
    the two together.

    Examples
    --------
    >>> planned_jobs("basic", {"seed": "1,2"}, ["optimizer.lr=0.1"])
    [['seed=1', 'optimizer.lr=0.1'], ['seed=2', 'optimizer.lr=0.1']]
    """
    if sweeper != "basic":
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    values: dict[str, list[str]] = {}
    try:
        for override in OverridesParser.create().parse_overrides(
            [*(f"{k}={v}" for k, v in params.items()), *overrides]
        ):
            key = override.get_key_element()
            if not override.is_sweep_override():
                values[key] = [f"{key}={override.get_value_element_as_str()}"]
            elif override.is_discrete_sweep():
                values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                return None  # interval(): the basic sweeper refuses it with its own message
    except Exception:  # a sweep the basic sweeper will refuse itself (or glob, which needs
        return None  # Hydra's config loader to list the options it matches)
    return [list(job) for job in itertools.product(*values.values())]


# Settings the sweep's parent run and its sender share with every job: one value a sweep.
SWEEP_WIDE = ("tracking.enabled", "tracking.uri", "tracking.offline", "tracking.experiment",
              "tracking.uploaders")  # fmt: skip


def refuse_sweep_wide(params: Mapping[str, str], overrides: Sequence[str]) -> None:
    """A ConfigError (one line, exit 2, before anything runs) for a swept :data:`SWEEP_WIDE`
    setting: its jobs would go to one store and experiment under one parent anyway.

    Examples
    --------
    >>> refuse_sweep_wide({"optimizer.lr": "0.1,1.0"}, ["tracking.uri=sqlite:///a.db"])
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from numgrad.config import ConfigError

    texts = [*(f"{k}={v}" for k, v in params.items()), *overrides]
    for text, override in zip(texts, OverridesParser.create().parse_overrides(texts), strict=True):
        key = override.get_key_element()
        if key in SWEEP_WIDE and override.is_sweep_override():
            why = "one value for the whole sweep (its parent and sender share it with every job)"
            raise ConfigError(key, text.split("=", 1)[1], f"{why}; run one sweep per value")


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


def parent_tags(
    sweep_dir: Any, overrides: Sequence[str], params: Mapping[str, str], sweeper: str, launcher: str
) -> dict[str, str]:
    """The tags of a sweep's parent run: its kind, dir, command line, sweeper and launcher."""
    tags = {
        "numgrad.kind": "sweep",
        "numgrad.sweep.dir": fit_tag(str(sweep_dir)),
        "numgrad.sweep.overrides": fit_tag(" ".join(overrides)),
        "numgrad.sweep.sweeper": sweeper,
        "numgrad.sweep.launcher": launcher,
        "numgrad.command": fit_tag(shlex.join(["numgrad", *sys.argv[1:]])),
    }
    if params:
        tags["numgrad.sweep.params"] = fit_tag(" ".join(f"{k}={v}" for k, v in params.items()))
    return tags
