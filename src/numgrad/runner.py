"""``execute(cfg)``: one experiment, from a composed config to its outcome.

validate → memory check → data → initial weights → SimpleNet → descent → sink. The config is
a DictConfig composed by Hydra (or the dataclass schema itself); the CLI adds the
output dir and the overrides that the run's records name.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from numgrad import data as sources
from numgrad import signals
from numgrad.config import AUTO_H, ConfigError, Init, Method, validate
from numgrad.data import load_data
from numgrad.descent import Descent
from numgrad.evaluation import Evaluation
from numgrad.memory import check_memory
from numgrad.net import InputError, SimpleNet
from numgrad.schemes import SCHEMES, engine_for
from numgrad.tracking.dataset import EVALUATION
from numgrad.tracking.sink import open_sink
from numgrad.tracking.uri import TrackingError, resolve_uri

SHOW_W_MAX = 64  # print the final W when it has at most this many elements


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended: its final numbers, its MLflow run, whether the store has it all."""

    final_loss: float
    final_accuracy: float
    steps_taken: int
    grad_rel_error: float | None
    dtype: str
    # On the held-out part (data.test_fraction > 0); None without one.
    final_test_loss: float | None
    final_test_accuracy: float | None
    run_id: str | None
    run_name: str | None
    synced: bool
    offline: bool = False  # tracking.offline=true: not synced, by choice
    local_note: str = ""
    scheme: str = "central"  # gradient.scheme: a column of a sweep's summary


def execute(
    cfg: Any,
    *,
    output_dir: Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = False,
) -> RunOutcome:
    """Run one experiment: validate, load, descend, record; print its summary.

    ``output_dir`` (the Hydra run dir) holds the run's journal and files; ``overrides``
    are the command line's, for the run's name and tags; ``progress`` draws a bar on
    stderr. Raises :class:`~numgrad.config.ConfigError` for bad input (before any run
    exists) and :class:`~numgrad.descent.Diverged` for a divergence.
    """
    validate(cfg)
    check_memory(cfg)  # before loading: blobs allocate while they are drawn
    rng = np.random.default_rng(cfg.seed)
    shape = list(cfg.net.shape)
    x, t = load_data(cfg.data, shape, rng)
    check_memory(cfg, data=(x, t))  # a file's size is known only once it is read
    try:
        W0 = initial_weights(cfg.net, shape, rng, tracking=cfg.tracking)
        net = SimpleNet(W0, dtype=cfg.gradient.dtype.value)
        x2d, labels = net.prepare(x, t)
    except InputError as exc:
        raise data_error(cfg, shape, exc) from None
    # After W0, so that W0 is that of the same run without a held-out part.
    train, test = sources.split(x2d, labels, cfg.data.test_fraction, rng)
    h = step_size(cfg.gradient, net.W, x2d)
    batch = check_batch(cfg.optimizer.batch_size, len(train[1]))
    # Logged beside the curve: the held-out part; with mini-batches, the whole training set.
    sets = {"test": test, "train": train if batch else None}
    evaluation = Evaluation({k: v for k, v in sets.items() if v is not None}, net.W)
    descent = Descent(
        net.W, *train, engine_for(cfg.gradient.method.value, cfg.gradient.scheme.value),
        h=h, lr=cfg.optimizer.lr, steps=cfg.optimizer.steps,
        tol=cfg.optimizer.tol, check=cfg.gradient.check, batch_size=batch, rng=rng,
        scheme=SCHEMES[cfg.gradient.scheme.value],
    )  # fmt: skip
    config = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    config["gradient"]["h"] = h  # the h used: gradient.h=auto is logged as the number it chose
    sink = open_sink(
        cfg.tracking,
        config=config,
        overrides=overrides or [],
        output_dir=output_dir,
        planned_steps=cfg.optimizer.steps,
    )
    with sink:
        sink.log_start(net.W.copy())
        sink.log_data(*train, cfg.data, cfg.seed)
        if test is not None:
            sink.log_data(*test, cfg.data, cfg.seed, context=EVALUATION)
        _descend(descent, sink, evaluation, show=progress)
        final = evaluation(net.W)
        sink.log_end(descent, W_final=net.W, evaluation=final)
    print_summary(descent, net, sink.describe(), final, test)
    last = descent.last_record
    return RunOutcome(
        final_loss=final.get("train_loss", last.loss), steps_taken=descent.steps_taken,
        final_accuracy=final.get("train_accuracy", last.accuracy),
        grad_rel_error=last.grad_rel_error, dtype=str(net.W.dtype),
        final_test_loss=final.get("test_loss"), final_test_accuracy=final.get("test_accuracy"),
        run_id=sink.run_id,
        run_name=getattr(sink, "run_name", None), synced=sink.synced,
        offline=bool(cfg.tracking.enabled and cfg.tracking.offline),
        local_note="" if sink.synced else sink.recorder.local_note(),
        scheme=cfg.gradient.scheme.value,
    )  # fmt: skip


def _descend(descent: Descent, sink: Any, evaluation: Evaluation, *, show: bool) -> None:
    """Iterate the descent into the sink, with a progress bar on stderr when asked.

    At the steps the sink keeps, ``evaluation`` of the record's weights goes with the
    record (the descent updates ``W`` only when asked for the next record).
    """
    bar = None
    if show and descent.steps:
        from tqdm import tqdm

        bar = tqdm(total=descent.steps, file=sys.stderr, ascii=True, mininterval=0.1)
    with bar if bar is not None else contextlib.nullcontext():
        try:
            for record in descent:
                wanted = evaluation and record.step in sink.selected
                sink.log_step(record, evaluation(descent.W) if wanted else None)
                if bar is not None and record.step and bar.update():  # True when just redrawn
                    bar.set_postfix_str(f"loss {record.loss:.6g}", refresh=False)
        except (KeyboardInterrupt, signals.Terminated):
            sink.log_stopped(descent)  # the weights where it stopped: the run keeps them
            raise


def initial_weights(
    net_cfg: Any, shape: list[int], rng: np.random.Generator, tracking: Any = None
) -> np.ndarray:
    """W0 from ``net.init``: ``normal`` (× ``net.scale``), ``zeros``, ``given`` (``net.W``)
    or ``run`` (the logged run ``net.from_run``, in the store ``tracking`` names)."""
    if net_cfg.init == Init.run:
        return logged_weights(net_cfg.from_run, tracking, shape)
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


def logged_weights(run_id: str, tracking: Any, shape: list[int]) -> np.ndarray:
    """``W_final`` of a logged run, from ``tracking.uri`` (or $MLFLOW_TRACKING_URI, the default).

    Read even with ``tracking.enabled=false`` or ``offline=true``: W0 is in that store.
    Returned as saved (float32 or float64); SimpleNet casts it to ``gradient.dtype``.
    """
    from numgrad.tracking.logged import read_weights

    try:
        W = read_weights(resolve_uri(tracking.uri if tracking is not None else None), run_id)
    except TrackingError as exc:
        raise ConfigError("net.from_run", run_id, str(exc)) from None
    if W.shape != tuple(shape):
        raise ConfigError(
            "net.from_run", run_id, f"its W_final has shape {list(W.shape)}, net.shape is {shape}"
        )
    return W


def check_batch(batch_size: int | None, n_train: int) -> int | None:
    """``optimizer.batch_size`` if it is fewer than the training samples; None for all of them.

    A batch of all of them or more (drawn with replacement) would cost as much as the full
    batch and add only noise: refused, naming the number there is.
    """
    if batch_size is not None and batch_size >= n_train:
        raise ConfigError(
            "optimizer.batch_size", batch_size,
            f"must be less than the {n_train} training samples (null: all of them)",
        )  # fmt: skip
    return batch_size


def step_size(gradient_cfg: Any, W: np.ndarray, x: np.ndarray) -> float:
    """The step h the run uses: ``gradient.h``, or the scheme's for ``auto``, announced.

    Refuses an ``h`` below the scheme's limit (W's float resolution for the real steps,
    underflow of ``h x`` for the complex step): every quotient would be 0 or wrong.
    """
    scheme = SCHEMES[gradient_cfg.scheme.value]
    if gradient_cfg.h == AUTO_H:
        h = scheme.auto_h(W, x)
        print(f"numgrad: gradient.h=auto: h = {h:.3g} ({scheme.name}, {W.dtype})")
        return h
    h = float(gradient_cfg.h)
    if gradient_cfg.method != Method.analytic:  # the analytic engine takes no differences
        reason = scheme.too_small(h, W, x)
        if reason:
            raise ConfigError("gradient.h", gradient_cfg.h, reason)
    return h


def data_error(cfg: Any, shape: list[int], exc: InputError) -> ConfigError:
    """Name the field to fix: the shape when the sizes disagree, else where the values came from."""
    if exc.input == "W":  # beyond float32's range, or not finite
        field, value = "net.scale", cfg.net.scale
        if cfg.net.init == Init.given:
            field, value = "net.W", OmegaConf.to_container(cfg.net.W)
        elif cfg.net.init == Init.run:  # a float64 W_final beyond float32's range
            field, value = "net.from_run", cfg.net.from_run
        return ConfigError(field, value, f"{exc} (gradient.dtype={cfg.gradient.dtype.value})")
    if exc.input == "shape":
        return ConfigError("net.shape", shape, f"does not fit data={cfg.data.name}: {exc}")
    field, value = sources.blame(cfg.data, exc.input) or ("data", cfg.data.name)
    return ConfigError(field, value, str(exc))


def print_summary(
    descent: Descent,
    net: SimpleNet,
    where: str | None,
    final: dict[str, float] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """The run's one-line result (held-out numbers too), the final W when small, and
    where the run is stored."""
    last, final = descent.last_record, final or {}
    rel = "" if last.grad_rel_error is None else f", grad rel. error {last.grad_rel_error:.3g}"
    # With mini-batches, the final numbers are those of the whole training set.
    loss, accuracy = final.get("train_loss", last.loss), final.get("train_accuracy", last.accuracy)
    print(
        f"numgrad: finished after {descent.steps_taken} steps "
        f"(stop reason: {descent.stop_reason}); final loss {loss:.10g}, "
        f"accuracy {accuracy:.4f}, grad norm {last.grad_norm:.3g}{rel}"
    )
    if final and test is not None:
        print(
            f"numgrad: held out {len(test[1])} samples: loss {final['test_loss']:.10g}, "
            f"accuracy {final['test_accuracy']:.4f}"
        )
    if net.W.size <= SHOW_W_MAX:
        print("W_final =\n" + np.array2string(net.W, precision=8, max_line_width=100))
    if where:
        print(where)
