"""Config loading: YAML + key=value overrides into frozen dataclasses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from facerec.config import load_config, parse_overrides, to_dict
from facerec.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    epochs: int = 1
    sizes: tuple[int, ...] = (1, 2)
    out: str | None = None
    inner: Inner = field(default_factory=Inner)


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nepochs: 3\ninner:\n  lr: 1\n")
    cfg = load_config(Outer, path, ["inner.kind=b", "sizes=[3, 4]", "out=null"])
    assert cfg == Outer("y", 3, (3, 4), None, Inner(1.0, "b"))
    assert to_dict(cfg)["sizes"] == [3, 4]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "z"  # frozen


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["nope=1"], "unknown config key 'nope'"),
        (["inner.nope=1"], "unknown config key 'inner.nope'"),
        (["epochs=two"], "epochs must be int"),
        (["inner.kind=c"], "inner.kind must be one of"),
        (["epochs"], "key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, bad)


def test_override_values_are_yaml():
    assert parse_overrides(["a.b=1.5", "c=true", "d=text"]) == {"a": {"b": 1.5}, "c": True, "d": "text"}
