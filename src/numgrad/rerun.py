"""``numgrad-rerun RUN_ID [OVERRIDES ...]``: a logged run's experiment, run again and compared.

It reads the run's ``config.yaml``, ``overrides.yaml`` and ``weights/W_final.npy`` from
its store (``--uri``, else ``$MLFLOW_TRACKING_URI``, else numgrad's embedded store),
turns numgrad's own keys of that config into safe overrides
(:mod:`numgrad.logged_config`), composes ``rerun_of=<id> <those> <yours>`` with Hydra's
compose API and runs it in this process through :func:`numgrad.cli.single_run`, as
``numgrad`` runs one: the same run dir (``hydra.run.dir``, with ``.hydra/`` and the job's
log), tracking, messages and exit statuses, and your overrides apply on top as on
numgrad's command line. The new run is tagged ``numgrad.rerun_of=<id>``; its W_final,
read back from the run :func:`~numgrad.runner.execute` reports, is then compared with
the original's, bit for bit.

Exit statuses: 0 W_final bit-identical (or different, with extra overrides: expected);
1 different without extra overrides (not reproduced here), or the rerun failed; 2 bad
input, nothing run: a malformed or unknown run id, a run without its config or its
W_final, a logged config refused (not numgrad's own, or invalid), a bad extra
override; 75, 130, 143 as ``numgrad`` (:mod:`numgrad.command`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numgrad import command, speed
from numgrad.command import FAILED


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``numgrad-rerun``, ``python -m numgrad.rerun``)."""
    speed.skip_exit_collections()
    os.environ["NUMGRAD_PID"] = str(os.getpid())  # in the run dir's name, as numgrad's
    command.run_command("numgrad-rerun", lambda: _command(argv))


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)  # --uri before or after the overrides
    return rerun(args.run_id, args.overrides, uri=args.uri)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numgrad-rerun",
        description="Run a logged numgrad run's experiment again, as a new run tagged "
        "numgrad.rerun_of=<id>, and say whether its W_final is bit-identical.",
        epilog="Only numgrad's own config keys are taken from the logged run: never hydra "
        "settings or anything naming code. Example: numgrad-rerun <id> optimizer.steps=200",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the MLflow run id (32 hex digits)")
    parser.add_argument(
        # default=[]: argparse would otherwise call an empty '*' list missing.
        "overrides", nargs="*", metavar="OVERRIDES", default=[],
        help="numgrad overrides applied on top of the logged config (key=value ...)",
    )  # fmt: skip
    parser.add_argument(
        "--uri", help="the tracking store the run is in and the rerun goes to "
        "(default: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )  # fmt: skip
    return parser


def rerun(run_id: str, extras: Sequence[str], *, uri: str | None = None) -> int:
    """Run the logged run ``run_id`` again with ``extras`` on top; return the exit status.

    Raises what :mod:`numgrad.command` reports: ConfigError or UsageError before anything
    runs, and the run's own errors (Diverged, NotSynced, a signal) as ``numgrad`` would.
    """
    from numgrad.cli import NOTHING_RAN, remove_unused_output_dir, single_run
    from numgrad.config import ConfigError, check_run_id, validate
    from numgrad.logged_config import hydra_value
    from numgrad.tracking.logged import read_weights, training_digest
    from numgrad.tracking.uri import resolve_uri

    check_run_id("run_id", run_id)
    W_old, overrides, _ = logged_experiment(run_id, resolve_uri(uri))
    args = [f"rerun_of={hydra_value(run_id)}", *overrides]
    args += [f"tracking.uri={hydra_value(uri)}"] if uri else []
    args += list(extras)
    cfg = _compose(args, with_hydra=True)
    task = _task_config(cfg)
    validate(task)  # extra overrides are refused as numgrad would refuse them: nothing ran
    if not task.tracking.enabled:
        raise ConfigError("tracking.enabled", False, "a rerun is compared through its store")
    if task.tracking.offline:
        raise ConfigError("tracking.offline", True, "a rerun is compared through its store")
    output_dir = Path(str(cfg.hydra.run.dir)).absolute()
    try:
        _make_run_dir(cfg, task, output_dir)
        outcome = single_run(task, output_dir, list(cfg.hydra.overrides.task))
    except BaseException as exc:
        if command.exit_status(exc) in NOTHING_RAN:  # a signal while the dir is being made
            remove_unused_output_dir(output_dir)
        raise
    target = resolve_uri(task.tracking.uri)
    same, line = compare(read_weights(target, outcome.run_id), W_old, run_id)
    changes = changing(extras)
    if not same:
        line += data_changed(training_digest(target, outcome.run_id),
                             training_digest(resolve_uri(uri), run_id))  # fmt: skip
        line += f" (extra overrides: {' '.join(changes)})" if changes else (
            " (no extra overrides that change the experiment: not reproduced)")  # fmt: skip
    print(f"numgrad-rerun: {line}")
    return 0 if same or changes else FAILED


def logged_experiment(run_id: str, source: str) -> tuple[Any, list[str], Any]:
    """A logged run's W_final, the overrides that compose its config, and that config.

    Raises ConfigError (or LoggedRunError) for anything :mod:`numgrad.logged_config`
    refuses and for a config that does not validate; nothing has run yet.
    """
    from numgrad.config import ConfigError, validate
    from numgrad.logged_config import DEFAULT, carried_values, check_overrides, plan
    from numgrad.tracking.logged import logged_run

    where = f"run {run_id}'s config.yaml"
    with logged_run(source, run_id) as run:
        W_old = run.weights()
        config = _read_yaml(run, "config.yaml")
        named = check_overrides(_read_yaml(run, "overrides.yaml"), f"run {run_id}'s overrides.yaml")
    values = carried_values(config, where)
    base = _flat(_compose([f"data={values.get('data.name', DEFAULT)}"]))
    overrides = plan(values, base, named, where)
    cfg = _compose(overrides)
    for key, value in _flat(cfg).items():  # what Hydra made of them: the logged values
        if key in values and not _equal(value, values[key]):
            raise ConfigError(key, values[key], f"in {where}: composes to {value!r}")
    try:
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.field, exc.value, f"{exc.reason} (in {where})") from None
    return W_old, overrides, cfg


def changing(extras: Sequence[str]) -> list[str]:
    """The extra overrides that may change W_final: not ``hydra.*``, ``tracking.*``, ``progress``.

    Examples
    --------
    >>> changing(["hydra.run.dir=/tmp/x", "optimizer.lr=0.5", "tracking.run_name=b"])
    ['optimizer.lr=0.5']
    """
    from numgrad.overrides import is_under, parse_override

    return [
        o for o in extras if not is_under(parse_override(o)[0], ["hydra", "tracking", "progress"])
    ]


def compare(W_new: Any, W_old: Any, run_id: str) -> tuple[bool, str]:
    """Is ``W_new`` bit for bit ``W_old`` (same dtype, shape and bytes)? And one line saying so.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([[0.1, 0.2]])
    >>> compare(W.copy(), W, "abc")
    (True, 'W_final is bit-identical to run abc')
    >>> compare(W + 3e-17, W, "abc")
    (False, 'W_final differs from run abc: max |ΔW| = 2.8e-17')
    """
    import numpy as np

    if W_new.dtype == W_old.dtype and W_new.shape == W_old.shape:
        if W_new.tobytes() == W_old.tobytes():
            return True, f"W_final is bit-identical to run {run_id}"
    if W_new.shape != W_old.shape:
        detail = f"shape {list(W_new.shape)}, was {list(W_old.shape)}"
    else:
        delta = np.max(np.abs(W_new.astype(np.float64) - W_old.astype(np.float64)))
        detail = f"max |ΔW| = {delta:.2g}"
        if W_new.dtype != W_old.dtype:
            detail += f" ({W_new.dtype}, was {W_old.dtype})"
    return False, f"W_final differs from run {run_id}: {detail}"


def data_changed(new: str | None, old: str | None) -> str:
    """Why W_final differs under the same config when the training data changed; else ''.

    Examples
    --------
    >>> data_changed("1a2b3c4d", "5e6f7a8b"), data_changed("1a2b3c4d", "1a2b3c4d")
    (' (the training data changed: dataset digest 1a2b3c4d, was 5e6f7a8b)', '')
    """
    changed = new is not None and old is not None and new != old
    return f" (the training data changed: dataset digest {new}, was {old})" if changed else ""


def _read_yaml(run: Any, name: str) -> Any:
    """A logged YAML file, plain data only: no Python tags, no aliases (numgrad writes none)."""
    import yaml

    from numgrad.tracking.logged import LoggedRunError

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):  # a few lines of aliases can expand to GBs
                raise yaml.YAMLError(f"an alias (*{self.peek_event().anchor})")
            return super().compose_node(parent, index)

    path = run.download(name)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)  # a SafeLoader
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise LoggedRunError(f"{name} of run {run.run_id} is not plain YAML: {reason}") from None


def _compose(overrides: Sequence[str], *, with_hydra: bool = False) -> Any:
    """numgrad's config for ``overrides``, composed as the ``numgrad`` command would.

    ``with_hydra`` keeps the ``hydra`` node (the run dir, the job's logging). Hydra's and
    OmegaConf's errors are bad input here: :class:`~numgrad.command.UsageError`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from numgrad.cli import CONFIG_DIR
    from numgrad.config import register_configs

    register_configs()
    try:
        with initialize_config_dir(
            config_dir=CONFIG_DIR, version_base="1.3", job_name="numgrad"
        ):  # fmt: skip
            return compose(
                config_name="config", overrides=list(overrides), return_hydra_config=with_hydra
            )
    except (HydraException, OmegaConfBaseException) as exc:
        raise command.UsageError(command.one_line(exc)) from None


def _task_config(cfg: Any) -> Any:
    """The composed config without its ``hydra`` node: what numgrad's task function gets."""
    import copy

    from omegaconf import open_dict, read_write

    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _make_run_dir(cfg: Any, task: Any, output_dir: Path) -> None:
    """Hydra's run dir for the composed ``cfg`` (``output_dir``), made as Hydra makes numgrad's.

    Its ``.hydra/`` with ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, and
    Hydra's job logging (``numgrad.log`` there).
    """
    from hydra.core.utils import configure_log
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict, read_write

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.runtime.output_dir = str(output_dir)
    saved = output_dir / str(cfg.hydra.output_subdir)
    saved.mkdir(parents=True, exist_ok=True)
    for name, node in (
        ("config.yaml", task),
        ("hydra.yaml", OmegaConf.masked_copy(cfg, "hydra")),
        ("overrides.yaml", cfg.hydra.overrides.task),
    ):
        (saved / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)


def _flat(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from numgrad.tracking.records import plain

    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(plain(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)), "")
    return out


def _equal(a: Any, b: Any) -> bool:
    """Equal as numbers and lists (1 == 1.0); the logged value made it through as it was."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


if __name__ == "__main__":
    main()
