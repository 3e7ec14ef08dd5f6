"""Typed, frozen dataclass configs loaded from YAML with ``key=value`` overrides.

Each stage defines its own frozen dataclasses in a light ``<stage>/config.py`` (no
numpy/torch, so the CLI can read their ``Literal`` choices while building ``--help``);
this module only knows how to fill any such dataclass from YAML and overrides.

The validation convention: a config's ``__post_init__`` calls ``check_config(self, [...])``
with every rule as a ``(holds, message)`` pair, and gets one ``ConfigError`` naming every
broken rule; ``from_dict`` likewise reports every unknown key and ill-typed value at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from facerec.errors import ConfigError

T = TypeVar("T")


def check_config(config: Any, rules: Iterable[tuple[bool, str]]) -> None:
    """Raise one ConfigError listing the message of every rule of ``config`` that does not hold.

    Messages start with the field they are about (``margin must be in [0, 3], got 5``);
    ``from_dict`` prefixes them with the key path of a nested config.
    """
    problems = [message for holds, message in rules if not holds]
    if problems:
        raise ConfigError(*problems)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML.

    An empty value (``device=``) sets nothing, so the file's value or the default stands:
    that is how MLproject passes a parameter left unset. ``key=""`` or ``key=null`` set
    an empty string or None explicitly.
    """
    import yaml  # here, not at the top: the CLI imports this module while it builds --help

    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if not raw.strip():
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
            node = child
        node[parts[-1]] = value
    return tree


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}".splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from an optional YAML file plus ``key=value`` overrides."""
    data = read_yaml(path) if path else {}
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Recursively build a (frozen) dataclass, checking keys and simple types.

    Every unknown key and ill-typed value is reported in one ConfigError; then the
    dataclass's own rules (``__post_init__``) run, their messages prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where.rstrip('.') or cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems = [
        f"unknown config key {where + key!r}; known keys: {', '.join(sorted(fields))}"
        for key in sorted(set(data) - set(fields))
    ]
    kwargs = {}
    for name, value in data.items():
        if name in fields:
            try:
                kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
            except ConfigError as exc:
                problems.extend(exc.problems)
    prefix = f"{where.rstrip('.')}: " if where else ""
    if problems:  # still check the dataclass's own rules on the readable values (defaults for the rest)
        with contextlib.suppress(TypeError, ValueError):
            try:
                cls(**kwargs)
            except ConfigError as exc:
                problems.extend(prefix + p for p in exc.problems)
        raise ConfigError(*problems)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(*(prefix + p for p in exc.problems)) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where.rstrip('.') or cls.__name__}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict view of a config dataclass (tuples become lists), for YAML and MLflow."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``, for logging params."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def save_config(config: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where + ".")
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            value = [value]
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be int, got {value!r}")
    return value
