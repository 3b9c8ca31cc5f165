"""A logged run's ``config.yaml`` as Hydra overrides: numgrad's own keys only, values made safe.

A run may come from a shared store that others write to, so nothing in it is trusted:

- values come from ``config.yaml`` only, and only for keys of numgrad's schema
  (:class:`~numgrad.config.NumgradConfig`); a key the schema does not have (``hydra``,
  ``_target_``, ``defaults``, a callback, a launcher, any unknown key) is refused, and
  so is a mapping where the schema has a value;
- ``overrides.yaml`` is read only to order the new overrides as the original command
  line had them; an entry that is not numgrad's own (``hydra.*``, ``hydra/launcher=``,
  ``+hydra/callbacks=``, a ``_target_``, a key or a config-group option numgrad does
  not have) is refused: a numgrad run never logs one;
- a string holding ``${`` is refused (``config.yaml`` is logged resolved, so a logged
  interpolation such as ``${oc.env:SECRET}`` can only be planted), ``data.x``,
  ``data.t`` and ``net.W`` must be numbers or lists of numbers, and every value is
  written in Hydra's override grammar (strings quoted by Hydra's own quoting, floats
  by their shortest exact repr) and parsed back: it must give the very same value;
- types are checked against the schema here, ranges by :func:`numgrad.config.validate`
  once the config is composed: a bad value is refused as on the command line.

Not carried: ``tracking.enabled``, ``tracking.offline`` and ``tracking.uri`` (where the
original was logged says nothing of where its rerun goes), ``progress`` (a terminal
setting) and ``rerun_of`` (set anew).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from numgrad.config import ConfigError, DataConfig, NumgradConfig
from numgrad.data import DEFAULT, SOURCES

NOT_CARRIED = frozenset(
    {"tracking.enabled", "tracking.offline", "tracking.uri", "progress", "rerun_of"}
)
ARRAYS = frozenset({"data.x", "data.t", "net.W"})  # Any-typed: numbers or lists of numbers
CONFIG_DIR = Path(__file__).parent / "conf"
NEVER = "never taken from a logged run"
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # no quote, comma, bracket, $, = or space


def schema_keys(node: type = NumgradConfig, prefix: str = "") -> dict[str, bool]:
    """Every dotted key of the schema: True for a value, False for a node holding values.

    Examples
    --------
    >>> keys = schema_keys()
    >>> keys["optimizer.lr"], keys["optimizer"], "hydra" in keys
    (True, False, False)
    """
    out: dict[str, bool] = {}
    hints = typing.get_type_hints(node)
    for field in dataclasses.fields(node):
        key, kind = prefix + field.name, hints[field.name]
        if dataclasses.is_dataclass(kind):
            out[key] = False
            # The data node: every source's fields (the logged data.name picks its schema).
            options = [s.Schema for s in SOURCES.values()] if kind is DataConfig else [kind]
            for option in options:
                out.update(schema_keys(option, key + "."))
        else:
            out[key] = True
    return out


def carried_values(config: Any, where: str) -> dict[str, Any]:
    """The values of ``config.yaml`` a rerun takes, by dotted key; ConfigError for the rest.

    ``where`` names the file in messages ("run <id>'s config.yaml").

    Examples
    --------
    >>> carried_values({"seed": 7, "optimizer": {"lr": 0.5}, "progress": True}, "x")
    {'seed': 7, 'optimizer.lr': 0.5}
    >>> carried_values({"hydra": {"run": {"dir": "/tmp"}}}, "run 1's config.yaml")
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid hydra={'run': {'dir': '/tmp'}}: in run 1's config.yaml: \
hydra settings are never taken from a logged run
    """
    if not isinstance(config, Mapping):
        raise ConfigError("config.yaml", type(config).__name__, f"in {where}: not a mapping")
    keys, out = schema_keys(), {}

    def walk(node: Mapping[Any, Any], prefix: str) -> None:
        for name, value in node.items():
            key = f"{prefix}{name}"
            if not isinstance(name, str) or key not in keys:
                raise ConfigError(key, value, f"in {where}: {_stranger(key)}")
            if not keys[key]:
                if not isinstance(value, Mapping):
                    raise ConfigError(key, value, f"in {where}: must be a mapping")
                walk(value, key + ".")
            elif key not in NOT_CARRIED:
                _check_value(key, value, where)
                out[key] = value

    walk(config, "")
    _drop_other_sources_defaults(out)
    _check_types(out, where)
    return out


#: Runs logged before each data source had its own schema carry every source's fields;
#: another source's field at its old default had no effect on the run.
OLD_DATA_DEFAULTS = {"data.x": None, "data.t": None, "data.n_samples": 60, "data.spread": 1.0,
                     "data.path": None, "data.scaling": "rms"}  # fmt: skip


def _drop_other_sources_defaults(values: dict[str, Any]) -> None:
    """Drop, in place, fields the run's data source does not have, where they hold the old
    defaults (any other value is left for :func:`_check_types` to refuse); no held-out
    part where none is logged."""
    if "data.name" in values:  # nothing held out before data.test_fraction existed
        values.setdefault("data.test_fraction", 0.0)
    source = SOURCES.get(values.get("data.name", DEFAULT))
    if source is None:
        return
    own = {f"data.{f.name}" for f in dataclasses.fields(source.Schema)}
    for key, default in OLD_DATA_DEFAULTS.items():
        if key in values and key not in own and _same(values[key], default):
            del values[key]


def _check_value(key: str, value: Any, where: str) -> None:
    """Refuse mappings, interpolations and non-numbers where only numbers belong."""
    for item in _leaves(value):
        if not (item is None or isinstance(item, str | int | float)):
            raise ConfigError(key, value, f"in {where}: a {type(item).__name__} is not a value")
        if isinstance(item, str) and ("${" in item or item == "???"):
            raise ConfigError(key, value, f"in {where}: an interpolation {NEVER}")
        if key in ARRAYS and value is not None and not _is_number(item):
            raise ConfigError(key, value, f"in {where}: must be numbers or lists of numbers")


def _is_number(item: Any) -> bool:
    return isinstance(item, int | float) and not isinstance(item, bool)


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _check_types(values: Mapping[str, Any], where: str) -> None:
    """Each value set into the structured schema on its own: OmegaConf's type checks."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    name = values.get("data.name", DEFAULT)
    if name not in SOURCES:  # a group option: only numgrad's own data sources
        raise ConfigError("data.name", name, f"in {where}: {_expected(name)}")
    cfg = OmegaConf.structured(NumgradConfig(data=SOURCES[name].Schema()))
    for key, value in values.items():
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(key, value, f"in {where}: {reason}") from None


def check_overrides(overrides: Any, where: str) -> list[str]:
    """The keys and groups ``overrides.yaml`` names, in order; ConfigError for a stranger.

    Examples
    --------
    >>> check_overrides(["data=iris", "optimizer.lr=0.5", "+search=lr_h"], "x")
    ['data', 'optimizer.lr', 'search']
    >>> check_overrides(["hydra/launcher=joblib"], "run 1's overrides.yaml")
    Traceback (most recent call last):
    ...
    numgrad.errors.ConfigError: invalid hydra/launcher='joblib': in run 1's overrides.yaml: \
hydra settings are never taken from a logged run
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("overrides.yaml", overrides, f"in {where}: not a list of overrides")
    parser, keys, named = OverridesParser.create(), schema_keys(), []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception as exc:
            reason = " ".join(str(exc).split())
            raise ConfigError("overrides.yaml", text, f"in {where}: {reason}") from None
        key = override.key_or_group
        own_key = keys.get(key) is True and override.package is None
        option = override.value() if not override.is_sweep_override() else None
        own_group = (
            key.isidentifier() and override.package is None and isinstance(option, str)
            and option.isidentifier() and (CONFIG_DIR / key / f"{option}.yaml").is_file()
        )  # fmt: skip
        if not (own_key or own_group) or override.is_hydra_override():
            raise ConfigError(key, text.partition("=")[2], f"in {where}: {_stranger(key)}")
        named.append(key)
    return named


def _expected(name: Any) -> str:
    """OmegaConf's words for a value outside a choice, as when data.name was an enum."""
    return f"Invalid value '{name}', expected one of [{', '.join(SOURCES)}]"


def _stranger(key: str) -> str:
    """Why a key is not taken from a logged run."""
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        return f"hydra settings are {NEVER}"
    if "_target_" in key or "callback" in key:
        return f"code is {NEVER}"
    return f"not numgrad's own config: {NEVER}"


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar, parsing back to exactly ``value``.

    Examples
    --------
    >>> hydra_value(0.1), hydra_value([[1, 2.5]]), hydra_value(None), hydra_value("iris")
    ('0.1', '[[1,2.5]]', 'null', 'iris')
    >>> print(hydra_value("a,b'c"), hydra_value("true"), hydra_value("1e3"))
    'a,b\\'c' 'true' '1e3'
    """
    from hydra.core.override_parser.types import Quote, QuotedString

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # the shortest string that reads back as the same float
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and _parse(f"k={value}").value() == value:
            return value  # as typed: data=iris, net.init=run (not true, null, 1e3 or nan)
        return QuotedString(value, Quote.single).with_quotes()
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    raise TypeError(f"not a config value: {value!r}")


def override(key: str, value: Any, where: str) -> str:
    """``key=<value>``, checked by parsing it back as Hydra will; ConfigError if it differs."""
    text = f"{key}={hydra_value(value)}"
    parsed = _parse(text)
    if parsed.is_sweep_override() or not _same(parsed.value(), value):
        raise ConfigError(key, value, f"in {where}: cannot be passed on exactly")
    return text


def _parse(text: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(text)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (lists item by item; nan equals nan)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def plan(
    values: Mapping[str, Any], base: Mapping[str, Any], named: Sequence[str], where: str
) -> list[str]:
    """The overrides that turn ``base`` (the config ``data=<name>`` composes to) into ``values``.

    ``data=<name>`` first when the original named a data option or the name is not the
    default; then every value that differs from ``base``, in the order of the original
    command line (``named``), then in schema order.

    Examples
    --------
    >>> base = {"seed": 0, "data.name": "article", "optimizer.lr": 0.1}
    >>> plan({"seed": 7, "data.name": "blobs", "optimizer.lr": 0.1}, base, ["seed"], "x")
    ['data=blobs', 'seed=7']
    """
    name = values.get("data.name", base.get("data.name"))
    if name not in SOURCES:  # a group option: only numgrad's own data sources
        raise ConfigError("data.name", name, f"in {where}: {_expected(name)}")
    order = {key: i for i, key in reversed(list(enumerate(named)))}  # first mention counts
    rest = len(order)
    entries = [
        (order.get(key, rest), override(key, value, where))
        for key, value in values.items()
        if key != "data.name" and not _same(value, base.get(key))
    ]
    if name != DEFAULT or "data" in order:
        entries.append((order.get("data", -1), f"data={name}"))
    return [text for _, text in sorted(entries, key=lambda entry: entry[0])]
