"""The ``numgrad`` command: Hydra composes the config, :func:`run` does the work.

``main`` is a thin Hydra wrapper; :func:`run` is a plain function of the composed
config that returns the final loss (what Hydra's sweepers minimise).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from numgrad import tracking
from numgrad.config import ConfigError, DataSource, Init, register_configs, validate
from numgrad.data import load_data
from numgrad.descent import Descent, Diverged, StepRecord
from numgrad.gradient import ENGINES
from numgrad.net import SimpleNet

# Registration only: the schema and a resolver that keeps output dirs of runs
# started in the same microsecond apart (cached, so every job of a sweep agrees).
register_configs()
OmegaConf.register_new_resolver("numgrad_pid", os.getpid, use_cache=True, replace=True)

CONFIG_DIR = str(Path(__file__).parent / "conf")
SHOW_W_MAX = 64  # print the final W when it has at most this many elements


class UserError(Exception):
    """An error the user can fix from the command line; printed as one line."""


def run(
    cfg: DictConfig, *, output_dir: Path | None = None, overrides: list[str] | None = None
) -> float:
    """Run one experiment and return its final loss.

    ``output_dir`` and ``overrides`` describe the Hydra job for the tracking
    records; without them (e.g. a config composed in a test) they are left empty.
    """
    validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    shape = list(cfg.net.shape)
    x, t = load_data(cfg.data, shape, rng)
    net = SimpleNet(_initial_weights(cfg.net, shape, rng))
    try:
        x2d, labels = net.prepare(x, t)
    except ValueError as exc:
        raise _data_error(cfg.data, shape, str(exc)) from None
    descent = Descent(
        net.W, x2d, labels, ENGINES[cfg.gradient.method.value],
        h=cfg.gradient.h, lr=cfg.optimizer.lr, steps=cfg.optimizer.steps,
        tol=cfg.optimizer.tol, check=cfg.gradient.check,
    )  # fmt: skip
    sink = tracking.open_sink(
        cfg.tracking,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        overrides=overrides or [],
        output_dir=output_dir,
        planned_steps=cfg.optimizer.steps,
    )
    progress = _Progress(cfg.optimizer.steps, _show_progress(cfg.progress))
    with sink:
        sink.log_start(net.W.copy())
        for record in descent:
            sink.log_step(record)
            progress.update(record)
        progress.close()
        sink.log_end(descent, W_final=net.W)
    _print_summary(descent, net, sink)
    return descent.last_record.loss


def _data_error(data_cfg: Any, shape: list[int], problem: str) -> ConfigError:
    """Name the field to fix: the shape when the sizes disagree, else where the data came from."""
    source = data_cfg.name.name
    if re.match(r"(x has \d+ features|t has \d+ classes)", problem):
        return ConfigError("net.shape", shape, f"does not fit data={source}: {problem}")
    if data_cfg.name == DataSource.file:
        return ConfigError("data.path", data_cfg.path, problem)
    if data_cfg.name == DataSource.article:
        field = "data.x" if problem.startswith("x ") else "data.t"
        return ConfigError(field, OmegaConf.to_container(data_cfg[field[5:]]), problem)
    return ConfigError("data", source, problem)


def _initial_weights(net_cfg: Any, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if net_cfg.init == Init.given:
        try:
            W = np.asarray(OmegaConf.to_container(net_cfg.W), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError("net.W", net_cfg.W, f"not a numeric matrix ({exc})") from None
        if W.shape != tuple(shape):
            raise ConfigError(
                "net.W", W.tolist(), f"has shape {list(W.shape)}, net.shape is {shape}"
            )
        if not np.isfinite(W).all():
            raise ConfigError("net.W", W.tolist(), "must be finite")
        return W
    if net_cfg.init == Init.zeros:
        return np.zeros(shape)
    return SimpleNet.random(shape, rng, scale=net_cfg.scale).W


def _print_summary(descent: Descent, net: SimpleNet, sink: Any) -> None:
    last = descent.last_record
    print(
        f"numgrad: finished after {descent.steps_taken} steps "
        f"(stop reason: {descent.stop_reason}); "
        f"final loss {last.loss:.10g}, accuracy {last.accuracy:.4f}, "
        f"grad norm {last.grad_norm:.3g}"
        + (
            f", grad rel. error {last.grad_rel_error:.3g}"
            if last.grad_rel_error is not None
            else ""
        )
    )
    if net.W.size <= SHOW_W_MAX:
        print("W_final =\n" + np.array2string(net.W, precision=8, max_line_width=100))
    where = getattr(sink, "describe", lambda: None)()
    if where:
        print(where)


def _show_progress(setting: bool | None) -> bool:
    if setting is not None:
        return setting
    return sys.stderr.isatty() and not _in_multirun()


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and total > 0
        self._next_draw = 0.0

    def update(self, record: StepRecord) -> None:
        now = time.monotonic()
        if not self.enabled or now < self._next_draw:
            return
        self._next_draw = now + 0.1
        done = record.step / self.total
        bar = "#" * int(30 * done)
        sys.stderr.write(f"\r[{bar:<30}] {record.step}/{self.total} loss {record.loss:.6g}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_entry(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    try:
        loss = run(cfg, output_dir=output_dir, overrides=overrides)
    except (ConfigError, tracking.TrackingError, Diverged) as exc:
        if not _in_multirun():
            if not isinstance(exc, Diverged):
                _remove_unused_output_dir(output_dir)  # nothing ran: leave nothing behind
            print(f"numgrad: error: {exc}", file=sys.stderr)
            sys.exit(1 if isinstance(exc, Diverged) else 2)
        # One bad cell must not stop the sweep: record it, tell the user, and give
        # sweepers the worst value (never NaN, which they cannot rank).
        print(f"numgrad: job {hc.job.num} ({' '.join(overrides)}) failed: {exc}", file=sys.stderr)
        write_job_status(output_dir, overrides, "FAILED", error=f"{type(exc).__name__}: {exc}",
                         job=hc.job.num, pid=os.getpid())  # fmt: skip
        return float("inf")
    if _in_multirun():  # only the sweep callback reads it
        write_job_status(
            output_dir, overrides, "FINISHED", final_loss=loss, job=hc.job.num, pid=os.getpid()
        )
    return loss


JOB_STATUS_FILE = "numgrad_job.json"


def _remove_unused_output_dir(output_dir: Path) -> None:
    """Remove what Hydra wrote for a run that never started (only its own files)."""
    import shutil

    shutil.rmtree(output_dir / ".hydra", ignore_errors=True)
    (output_dir / "numgrad.log").unlink(missing_ok=True)
    try:
        output_dir.rmdir()  # only if now empty: never a directory the user owns
    except OSError:
        pass


def write_job_status(output_dir: Path, overrides: list[str], status: str, **fields: Any) -> None:
    """Leave the job's outcome in its output dir, where the sweep callback reads it."""
    import json

    record = {"overrides": overrides, "status": status, **fields}
    tmp = output_dir / (JOB_STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(output_dir / JOB_STATUS_FILE)  # atomic: a reader never sees half a file


def main() -> None:
    """Console entry point (``numgrad`` and ``python -m numgrad``)."""
    # Hydra prints composition errors over several lines plus a hint; asking it to
    # raise instead lets us print one line. A user who set the variable gets Hydra's.
    own_errors = "HYDRA_FULL_ERROR" not in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    from numgrad import callbacks

    try:
        try:
            _hydra_entry()
        except BaseException as exc:
            # Hydra calls no on_multirun_end when the sweeper raises (a job's unexpected
            # error, Ctrl-C, SIGTERM): end the sweep's parent run here, KILLED or FAILED.
            callbacks.end_sweep(exc)
            raise
        outcome = callbacks.end_sweep()  # a no-op after on_multirun_end; None for one run
        if outcome is not None and outcome.failed:
            sys.exit(1)  # the sweep's end printed every failed job, not only the first
    except KeyboardInterrupt:
        print("numgrad: interrupted", file=sys.stderr)
        sys.exit(130)
    except tracking.Terminated:
        print("numgrad: terminated", file=sys.stderr)
        sys.exit(143)
    except (HydraException, OmegaConfBaseException, UserError, ConfigError) as exc:
        if not own_errors:
            raise
        print(f"numgrad: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except (tracking.TrackingError, Diverged) as exc:  # a failed job of a multirun
        if not own_errors:
            raise
        print(f"numgrad: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages folded into one line.

    Examples
    --------
    >>> nl, tab = chr(10), chr(9)
    >>> one_line(ValueError(f"Could not find 'data/x'{nl}Options:{nl}{tab}a{nl}{tab}b"))
    "Could not find 'data/x'; Options: a, b"
    """
    parts = [str(exc)]
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in parts[0]:
        parts.append(str(cause))
    text = "; ".join(parts)
    text = re.sub(r"\n\s*(full_key|object_type|reference_type)=?:?.*", "", text)
    text = re.sub(r":\s*\n\s*\t", ": ", text)
    text = re.sub(r"\n\s*\t", ", ", text)
    text = re.sub(r"\s*\n+\s*", "; ", text).strip("; ")
    text = re.sub(r"; (Config search path|See https://hydra\.cc).*", "", text)
    override = getattr(exc, "override", None)  # Hydra's OverrideParseException
    if override is not None and str(override) not in text:
        text = f"cannot parse override {str(override)!r}: {text}"
    return text
