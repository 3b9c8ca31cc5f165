"""Override strings split into key and value (numgrad.overrides)."""

from __future__ import annotations

import pytest

from numgrad.overrides import is_under, parse_override, swept_values


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("optimizer.lr=0.1", ("optimizer.lr", "0.1", False)),
        ("+data.x=1", ("data.x", "1", False)),
        ("++data.x=1", ("data.x", "1", False)),
        ("~net.W", ("net.W", None, True)),
        ("~net.W=[1]", ("net.W", "[1]", True)),
        ("data=iris", ("data", "iris", False)),
        ("tracking.uri=http://h:5000/?a=b", ("tracking.uri", "http://h:5000/?a=b", False)),
        ("gradient.h=", ("gradient.h", "", False)),  # an empty value is a value
    ],
)
def test_an_override_splits_at_its_first_equals_sign(text, parsed):
    assert parse_override(text) == parsed


def test_a_key_is_under_a_root_only_at_a_dot_or_a_slash():
    assert is_under("hydra", ["hydra"]) and is_under("hydra.run.dir", ["hydra"])
    assert is_under("hydra/launcher", ["hydra"]) and is_under("progress", ["hydra", "progress"])
    assert not is_under("hydrant", ["hydra"]) and not is_under("tracking_x", ["tracking"])


def test_swept_values_leave_out_hydra_and_deletions():
    overrides = [
        "optimizer.lr=0.1",
        "+data.x=1",
        "hydra.run.dir=/x",
        "~net.W",
        "hydra/launcher=ray",
    ]
    assert swept_values(overrides) == {"optimizer.lr": "0.1", "data.x": "1"}
