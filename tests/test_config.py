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


def test_every_bad_key_and_value_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_config(Outer, None, ["nope=1", "epochs=two", "inner.kind=c", "inner.typo=2"])
    assert len(caught.value.problems) == 4
    message = str(caught.value)
    assert "\n" not in message
    for part in ("'nope'", "epochs must be int", "inner.kind must be one of", "'inner.typo'"):
        assert part in message


def test_a_config_s_rules_are_all_checked_and_nested_ones_name_their_key():
    from facerec.evaluation.config import EvalConfig
    from facerec.faces.config import CropConfig

    with pytest.raises(ConfigError) as caught:
        EvalConfig(far=2.0, n_folds=1, holdout=1.0)
    assert caught.value.problems == (
        "far must lie in (0, 1), got 2.0",
        "holdout must lie in [0, 1), got 1.0",
        "n_folds must be >= 2, got 1",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(CropConfig, None, ["detector.margin=9", "detector.batch_size=0", "jpeg_quality=0"])
    assert caught.value.problems == (
        "detector: margin must be in [0, 3], got 9.0",
        "detector: batch_size must be >= 1, got 0",
        "jpeg_quality must be in [1, 100], got 0",  # the outer rules too, though the nested config failed
    )


def test_an_empty_override_keeps_the_file_s_value(tmp_path):
    """MLproject passes a parameter left unset as KEY=; KEY=null and KEY="" still set None and ''."""
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nout: somewhere\n")
    assert load_config(Outer, path, ["name=", "out= "]) == Outer(name="y", out="somewhere")
    assert load_config(Outer, path, ['name=""', "out=null"]) == Outer(name="", out=None)
