"""Composition of conf/ with Hydra's compose API, and validate()."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import OmegaConf

from numgrad.config import (
    ConfigError,
    DType,
    Init,
    Method,
    register_configs,
    validate,
)
from numgrad.data import DEFAULT, load_data
from numgrad.data.iris import Scaling

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = {
    "data": ["article", "blobs", "iris", "file", "digits"],
    "net": ["simple"],
    "gradient": ["central"],
    "optimizer": ["sgd"],
    "tracking": ["mlflow"],
}


def compose_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_repo_conf_is_the_packaged_conf():
    import numgrad.cli

    assert CONF.resolve() == Path(numgrad.cli.CONFIG_DIR).resolve()


def test_every_option_of_every_group_is_listed_here():
    on_disk = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in GROUPS}
    assert on_disk == {g: sorted(opts) for g, opts in GROUPS.items()}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_option_composes(group, option):
    cfg = compose_cfg(f"{group}={option}")
    assert OmegaConf.is_config(cfg[group])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_defaults_are_the_book_example():
    cfg = compose_cfg()
    assert cfg.seed == 0
    assert cfg.data.name == "article" == DEFAULT  # the rerun's plan leaves data= out for it
    assert list(cfg.data.x) == [0.6, 0.9] and list(cfg.data.t) == [0, 0, 1]
    assert list(cfg.net.shape) == [2, 3] and cfg.net.init is Init.normal and cfg.net.scale == 1.0
    assert cfg.gradient.method is Method.vectorized and cfg.gradient.h == 1e-4
    assert not cfg.gradient.check and cfg.gradient.dtype is DType.float64
    assert (cfg.optimizer.lr, cfg.optimizer.steps, cfg.optimizer.tol) == (0.1, 100, 0.0)
    assert cfg.tracking.enabled and cfg.tracking.uri is None
    assert cfg.tracking.experiment == "numgrad" and cfg.tracking.max_points == 1000
    validate(cfg)


def test_overrides_reach_the_config():
    cfg = compose_cfg(
        "optimizer.lr=0.5", "gradient.h=1e-3", "net.shape=[4,3]", "data=blobs", "seed=7",
        "gradient.method=loop", "gradient.check=true", "optimizer.steps=0", "data.spread=0.25",
        "tracking.enabled=false", "gradient.dtype=float32",
    )  # fmt: skip
    assert cfg.gradient.dtype is DType.float32
    assert cfg.optimizer.lr == 0.5 and cfg.gradient.h == 1e-3 and cfg.seed == 7
    assert list(cfg.net.shape) == [4, 3] and cfg.data.name == "blobs"
    assert cfg.gradient.method is Method.loop and cfg.gradient.check
    assert cfg.optimizer.steps == 0 and cfg.data.spread == 0.25 and not cfg.tracking.enabled
    x, t = load_data(cfg.data, list(cfg.net.shape), np.random.default_rng(cfg.seed))
    assert x.shape == (60, 4) and set(t.tolist()) == {0, 1, 2}


def test_iris_sets_shape_and_lr_itself_and_overrides_still_win():
    cfg = compose_cfg("data=iris")
    assert list(cfg.net.shape) == [4, 3] and cfg.optimizer.lr == 1.0
    x, t = load_data(cfg.data, [4, 3], np.random.default_rng(0))
    assert x.shape == (150, 4) and np.bincount(t).tolist() == [50, 50, 50]
    np.testing.assert_allclose(np.sqrt(np.mean(x**2, axis=0)), 1, atol=1e-12)
    assert cfg.data.scaling is Scaling.rms
    cfg = compose_cfg("data=iris", "optimizer.lr=0.3", "data.scaling=zscore")
    assert cfg.optimizer.lr == 0.3
    x, _ = load_data(cfg.data, [4, 3], np.random.default_rng(0))
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-12)


def test_inline_data_and_given_weights():
    cfg = compose_cfg(
        "data.x=[[0.6,0.9],[0.1,0.4]]", "data.t=[2,0]", "net.init=given",
        "net.W=[[1,2,3],[4,5,6]]",
    )  # fmt: skip
    validate(cfg)
    x, t = load_data(cfg.data, [2, 3], np.random.default_rng(0))
    assert x.tolist() == [[0.6, 0.9], [0.1, 0.4]] and t.tolist() == [2, 0]


@pytest.mark.parametrize(
    "override",
    ["optimizer.lr=abc", "optimizer.steps=1.5", "net.init=uniform", "gradient.method=forward",
     "optimizer.momentum=0.9", "data=nope", "net.shape=[2,x]", "gradient.h=[1",
     "gradient.dtype=float16", "seed=1.5", "data=blobs data.x=[1]", "data=iris data.path=a.csv",
     "data=file data.n_samples=5", "data=article data.scaling=none"],
)  # fmt: skip
def test_type_errors_fail_at_composition(override):
    # A field another data source has does not exist for this one (one schema per option).
    with pytest.raises((ConfigCompositionException, OverrideParseException)):
        compose_cfg(*override.split())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", r"invalid optimizer.lr=0.0: must be > 0"),
        ("optimizer.lr=-1", r"invalid optimizer.lr=-1.0: must be > 0"),
        ("optimizer.lr=nan", r"invalid optimizer.lr=nan: must be a finite number"),
        ("optimizer.lr=inf", r"invalid optimizer.lr=inf: must be a finite number"),
        ("optimizer.lr=1e400", r"invalid optimizer.lr=inf: must be a finite number"),
        ("gradient.h=0", r"invalid gradient.h=0.0: must be > 0"),
        ("gradient.h=-1e-4", r"invalid gradient.h=-0.0001: must be > 0"),
        ("optimizer.steps=-1", r"invalid optimizer.steps=-1: must be >= 0"),
        ("optimizer.tol=-0.1", r"invalid optimizer.tol=-0.1: must be >= 0"),
        ("net.shape=[2]", r"invalid net.shape=\[2\]: must be \[n_inputs, n_classes\]"),
        ("net.shape=[0,3]", r"invalid net.shape=\[0, 3\]"),
        ("net.shape=[2,1]", r"^invalid net.shape=\[2, 1\]: a classifier needs at least 2 classes$"),
        ("seed=-1", r"^invalid seed=-1: must be >= 0$"),
        ("net.init=given", r"invalid net.W=None: net.init=given needs net.W"),
        ("net.W=[[1,2,3],[4,5,6]]", r"invalid net.init='normal': net.W is given"),
        ("data=file", r"invalid data.path=None: data=file needs data.path"),
        ("data.x=null", r"^invalid data.x=None: give both x and t$"),
        ("data.t=null", r"^invalid data.t=None: give both x and t$"),
        ("data.x=null data.t=null", r"^invalid data.x=None: data=article needs data.x and data.t$"),
        ("data=blobs data.spread=nan", r"^invalid data.spread=nan: must be a finite number$"),
        ("data=iris data.name=blobs", r"^invalid data.name='blobs': choose a source with data="),
        ("data=blobs data.n_samples=0", r"invalid data.n_samples=0: must be >= 1"),
        ("tracking.log_every=0", r"invalid tracking.log_every=0: must be >= 1"),
        ("tracking.uploaders=0", r"^invalid tracking.uploaders=0: must be from 1 to 16, or null"),
        ("tracking.uploaders=17", r"^invalid tracking.uploaders=17: must be from 1 to 16, or null"),
    ],
)
def test_validate_names_field_and_value(override, message):
    cfg = compose_cfg(*override.split())
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_config_error_is_one_line():
    err = ConfigError("optimizer.lr", math.nan, "must be a finite number")
    assert "\n" not in str(err) and err.field == "optimizer.lr"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "invalid seed=-1: must be >= 0"),  # was numpy's 43-line traceback
        ("net.shape=[2,1]", "invalid net.shape=[2, 1]: a classifier needs at least 2 classes"),
    ],
)
def test_the_command_refuses_in_one_line(workdir, override, message):
    proc = workdir.run(override, "tracking.enabled=false", check=False)
    assert (proc.returncode, proc.stderr) == (2, f"numgrad: error: {message}\n")
    assert not (workdir.path / "run").exists()


@pytest.mark.parametrize("scheme", ["central", "forward", "central4", "complex"])
def test_every_scheme_composes_and_auto_h_passes(scheme):
    cfg = compose_cfg(f"gradient.scheme={scheme}", "gradient.h=auto")
    validate(cfg)
    assert cfg.gradient.scheme.value == scheme and cfg.gradient.h == "auto"
    assert compose_cfg().gradient.scheme.value == "central"  # the book's, by default
    with pytest.raises(ConfigCompositionException):
        compose_cfg("gradient.scheme=backward")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gradient.h=abc", "invalid gradient.h='abc': must be a positive number or auto"),
        ("gradient.h=[1e-3]", "invalid gradient.h=[0.001]: must be a positive number or auto"),
        ("gradient.h=true", "invalid gradient.h=True: must be a positive number or auto"),
        ("gradient.h=nan", "invalid gradient.h=nan: must be a finite number"),
        ("gradient.h=0", "invalid gradient.h=0.0: must be > 0"),
    ],
)
def test_h_is_a_positive_number_or_auto(override, message):
    cfg = compose_cfg(override)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        validate(cfg)
    validate(compose_cfg("gradient.h=1"))  # an int is a number
