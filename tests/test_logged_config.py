"""A logged config as safe overrides (numgrad.logged_config): what is taken, how it is written.

Every written override is parsed back by Hydra here, and composed configs are compared
with the logged values: the checks do not trust the module's own round trip.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from numgrad.cli import CONFIG_DIR
from numgrad.config import ConfigError, NumgradConfig, register_configs
from numgrad.data.article import ArticleData
from numgrad.logged_config import (
    NOT_CARRIED,
    carried_values,
    check_overrides,
    hydra_value,
    override,
    plan,
    schema_keys,
)
from numgrad.tracking.records import plain

WHERE = "run abc's config.yaml"


def compose_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def logged_config(*overrides: str) -> dict:
    """config.yaml as the sink writes it, read back as numgrad-rerun reads it."""
    cfg = compose_cfg(*overrides)
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    return yaml.safe_load(yaml.safe_dump(plain(container), sort_keys=False))


def replanned(config: dict, named: list[str]) -> tuple[list[str], dict]:
    """The overrides for a logged config, and what they compose to (flat)."""
    values = carried_values(config, WHERE)
    base = flat(OmegaConf.to_container(compose_cfg(f"data={values['data.name']}"), resolve=True,
                                       enum_to_str=True))  # fmt: skip
    overrides = plan(values, base, named, WHERE)
    composed = compose_cfg(*overrides)
    return overrides, flat(OmegaConf.to_container(composed, resolve=True, enum_to_str=True))


# ------------------------------------------------------------- values, exactly


@pytest.mark.parametrize(
    "value",
    [
        0.1, 1e-05, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, math.inf, -math.inf, 0, -7,
        2**70, True, False, None, [0.6, 0.9], [[1, 2.5], [3, 1e-300]], [],
        "plain", "a,b", "it's", 'say "hi"', "back\\slash\\", "\\'", "a b", "[1,2]", "{a: 1}",
        "true", "null", "nan", "1e3", "007", "x=y", "choice(a,b)", "glob(*)", "$HOME", "é ü ✓",
        "tab\there", "new\nline", "'", '"', "",
    ],
)  # fmt: skip
def test_a_value_is_written_so_that_hydra_reads_it_back_exactly(value):
    text = hydra_value(value)
    parsed = OverridesParser.create().parse_override(f"key={text}")
    assert not parsed.is_sweep_override()
    back = parsed.value()
    assert type(back) is type(value) and back == value
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)


def test_nan_is_written_as_nan():
    back = OverridesParser.create().parse_override(f"key={hydra_value(math.nan)}").value()
    assert math.isnan(back)


def test_enum_names_and_ids_are_written_as_typed_when_that_is_exact():
    assert override("net.init", "run", WHERE) == "net.init=run"
    assert override("net.from_run", "0123456789abcdef0123456789abcdef", WHERE).endswith(
        "=0123456789abcdef0123456789abcdef"
    )
    assert override("rerun_of", "12345678901234567890123456789012", WHERE) == (
        "rerun_of='12345678901234567890123456789012'"  # digits only: an int unless quoted
    )


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["data=iris"],
        ["data=blobs", "seed=3", "net.shape=[3,4]", "data.spread=0.25"],
        ["net.init=given", "net.W=[[0.5,-1,2],[1e-3,0,3]]", "optimizer.steps=7"],
        ["gradient.dtype=float32", "gradient.h=1e-2", "gradient.method=loop", "gradient.check=true"],
        ["data=file", "data.path='my data, v2 (it\\'s) \\\\.csv'"],
        ["tracking.experiment=a\\,b", "tracking.run_name='x=1 y=[2] $HOME'"],
        ["optimizer.lr=0.30000000000000004", "optimizer.tol=1e-12", "tracking.flush_seconds=0.5"],
    ],
)  # fmt: skip
def test_a_logged_config_composes_back_to_itself(overrides):
    config = logged_config(*overrides)
    _, composed = replanned(config, [])
    logged = {k: v for k, v in flat(config).items() if k not in NOT_CARRIED}
    assert {k: composed[k] for k in logged} == logged


def test_the_plan_is_the_original_command_line_in_its_order():
    named = ["optimizer.lr", "data", "seed", "tracking.uri", "rerun_of"]
    config = logged_config(
        "optimizer.lr=0.5", "data=blobs", "seed=7", "tracking.uri=sqlite:///x.db"
    )
    overrides, _ = replanned(config, named)
    assert overrides == ["optimizer.lr=0.5", "data=blobs", "seed=7"]
    assert replanned(logged_config("data=iris"), [])[0] == ["data=iris"]
    assert replanned(logged_config(), [])[0] == []


def test_what_is_not_carried():
    values = carried_values(
        logged_config("tracking.uri=sqlite:///x.db", "tracking.offline=true"), WHERE
    )
    assert NOT_CARRIED.isdisjoint(values)
    assert values["tracking.experiment"] == "numgrad" and values["optimizer.lr"] == 0.1
    article = {f"data.{f.name}" for f in dataclasses.fields(ArticleData)}
    leaves = {k for k, leaf in schema_keys().items() if leaf}
    assert set(values) | NOT_CARRIED == {k for k in leaves if not k.startswith("data.")} | article


def test_schema_keys_hold_every_data_source_s_fields():
    keys = schema_keys()
    assert all(keys[k] for k in ("data.x", "data.n_samples", "data.scaling", "data.path"))


def test_a_field_of_another_source_is_refused_by_the_run_s_schema():
    config = logged_config("data=blobs")
    config["data"]["x"] = [1.0, 2.0]
    with pytest.raises(ConfigError, match=r"^invalid data.x=\[1.0, 2.0\]: in run abc's config.yaml: "
                       r"Key 'x' not in 'BlobsData'"):  # fmt: skip
        carried_values(config, WHERE)


def test_a_run_logged_with_the_single_data_schema_still_reruns():
    """Before each source had its schema, config.yaml held every source's fields at their
    defaults; those had no effect, and are left out."""
    old = logged_config("data=iris")
    old["data"] = {"name": "iris", "x": None, "t": None, "n_samples": 60, "spread": 1.0,
                   "path": None, "scaling": "rms"}  # fmt: skip
    overrides, composed = replanned(old, ["data"])
    assert overrides == ["data=iris", "data.test_fraction=0.0"]  # nothing was held out then
    assert composed["data.test_fraction"] == 0.0
    old["data"]["n_samples"] = 61  # not a default: it said something, and iris has no such field
    with pytest.raises(ConfigError, match=r"^invalid data.n_samples=61: .*not in 'IrisData'"):
        carried_values(old, WHERE)


def test_schema_keys_follow_the_dataclasses():
    keys = schema_keys()
    assert keys["net"] is False and keys["net.from_run"] is True and keys["rerun_of"] is True
    cfg = OmegaConf.structured(NumgradConfig(data=ArticleData()))
    assert set(OmegaConf.to_container(cfg)) == {k for k in keys if "." not in k}


# ------------------------------------------------------------------ refusals


def tampered(path: str, value):
    config = logged_config()
    node = config
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("hydra.run.dir", "/tmp/elsewhere",
         "invalid hydra={'run': {'dir': '/tmp/elsewhere'}}: in run abc's config.yaml: hydra settings are never taken from a logged run"),
        ("hydra.callbacks.evil._target_", "os.system",
         "invalid hydra={'callbacks': {'evil': {'_target_': 'os.system'}}}: in run abc's config.yaml: hydra settings are never taken from a logged run"),
        ("_target_", "os.system",
         "invalid _target_='os.system': in run abc's config.yaml: code is never taken from a logged run"),
        ("net._target_", "os.system",
         "invalid net._target_='os.system': in run abc's config.yaml: code is never taken from a logged run"),
        ("callbacks", {"x": 1},
         "invalid callbacks={'x': 1}: in run abc's config.yaml: code is never taken from a logged run"),
        ("defaults", ["override hydra/launcher: joblib"],
         "invalid defaults=['override hydra/launcher: joblib']: in run abc's config.yaml: not numgrad's own config: never taken from a logged run"),
        ("optimizer.momentum", 0.9,
         "invalid optimizer.momentum=0.9: in run abc's config.yaml: not numgrad's own config: never taken from a logged run"),
        ("optimizer", [1],
         "invalid optimizer=[1]: in run abc's config.yaml: must be a mapping"),
        ("net.W", {"_target_": "os.system", "_args_": ["id"]},
         "invalid net.W={'_target_': 'os.system', '_args_': ['id']}: in run abc's config.yaml: a dict is not a value"),
        ("tracking.experiment", "${oc.env:AWS_SECRET_ACCESS_KEY}",
         "invalid tracking.experiment='${oc.env:AWS_SECRET_ACCESS_KEY}': in run abc's config.yaml: an interpolation never taken from a logged run"),
        ("data.path", "\\${oc.env:HOME}",
         "invalid data.path='\\\\${oc.env:HOME}': in run abc's config.yaml: an interpolation never taken from a logged run"),
        ("net.shape", ["${seed}", 3],
         "invalid net.shape=['${seed}', 3]: in run abc's config.yaml: an interpolation never taken from a logged run"),
        ("tracking.run_name", "???",
         "invalid tracking.run_name='???': in run abc's config.yaml: an interpolation never taken from a logged run"),
        ("data.x", ["0.6", 0.9],
         "invalid data.x=['0.6', 0.9]: in run abc's config.yaml: must be numbers or lists of numbers"),
        ("optimizer.lr", "abc",
         "invalid optimizer.lr='abc': in run abc's config.yaml: Value 'abc' of type 'str' could not be converted to Float"),
        ("data.name", "../../../tmp/evil",
         "invalid data.name='../../../tmp/evil': in run abc's config.yaml: Invalid value '../../../tmp/evil', expected one of [article, blobs, iris, file, digits]"),
        ("seed", 1.5,
         "invalid seed=1.5: in run abc's config.yaml: Value '1.5' of type 'float' could not be converted to Integer"),
    ],
)  # fmt: skip
def test_a_tampered_config_is_refused_naming_the_key(path, value, message):
    with pytest.raises(ConfigError) as info:
        carried_values(tampered(path, value), WHERE)
    assert str(info.value) == message


def test_a_config_that_is_not_a_mapping_is_refused():
    with pytest.raises(
        ConfigError, match=r"invalid config.yaml='list': in run abc's config.yaml: not a mapping"
    ):
        carried_values([1, 2], WHERE)


def test_values_outside_what_is_carried_are_not_looked_at():
    config = tampered("tracking.uri", "${oc.env:SECRET}")
    assert "tracking.uri" not in carried_values(config, WHERE)


# ------------------------------------------------------------- overrides.yaml


def test_a_numgrad_command_line_is_accepted():
    named = check_overrides(
        ["data=iris", "optimizer.lr=0.5", "+search=lr_h", "~net.W", "net.shape=[4,3]",
         "tracking.uri=http://127.0.0.1:5000", "rerun_of=0123456789abcdef0123456789abcdef",
         "data.path=${oc.env:HOME}/x.csv", "net=simple", "++seed=3"],
        "x",
    )  # fmt: skip
    assert named == [
        "data", "optimizer.lr", "search", "net.W", "net.shape", "tracking.uri", "rerun_of",
        "data.path", "net", "seed",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("hydra.run.dir=/tmp/x", "invalid hydra.run.dir='/tmp/x': in o: hydra settings are never taken from a logged run"),
        ("hydra/launcher=joblib", "invalid hydra/launcher='joblib': in o: hydra settings are never taken from a logged run"),
        ("+hydra/callbacks=evil", "invalid hydra/callbacks='evil': in o: hydra settings are never taken from a logged run"),
        ("+hydra.callbacks.x._target_=os.system", "invalid hydra.callbacks.x._target_='os.system': in o: hydra settings are never taken from a logged run"),
        ("hydra.job.chdir=true", "invalid hydra.job.chdir='true': in o: hydra settings are never taken from a logged run"),
        ("+net._target_=os.system", "invalid net._target_='os.system': in o: code is never taken from a logged run"),
        ("+callbacks=x", "invalid callbacks='x': in o: code is never taken from a logged run"),
        ("+optimizer.momentum=0.9", "invalid optimizer.momentum='0.9': in o: not numgrad's own config: never taken from a logged run"),
        ("data=evil", "invalid data='evil': in o: not numgrad's own config: never taken from a logged run"),
        ("data@net=iris", "invalid data='iris': in o: not numgrad's own config: never taken from a logged run"),
        ("search=../../x", "invalid search='../../x': in o: not numgrad's own config: never taken from a logged run"),
        ("optimizer.lr=${oc.env:X", "cannot parse"),
        ("optimizer.lr=[unclosed", "invalid overrides.yaml='optimizer.lr=[unclosed': in o: "),
    ],
)  # fmt: skip
def test_an_overrides_entry_that_is_not_numgrads_own_is_refused(entry, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(["seed=1", entry], "o")
    if message == "cannot parse":
        assert str(info.value).startswith(f"invalid overrides.yaml='{entry}': in o: ")
    else:
        assert str(info.value).startswith(message)


@pytest.mark.parametrize("overrides", [{"seed": 1}, "seed=1", [1], None])
def test_overrides_that_are_not_a_list_of_strings_are_refused(overrides):
    with pytest.raises(ConfigError, match="not a list of overrides"):
        check_overrides(overrides, "o")
