"""Scenarios: everything that defines an instance, as validated dataclasses.

Each environment module declares its own frozen Scenario dataclass (fields with
units in their names, checks in `__post_init__`) and registers named presets
here. `resolve_scenario` turns what a user passes to `gymnasium.make(...,
scenario=...)` into that dataclass: a preset name, a path to a YAML file, a
dict, or an instance. Unknown fields and ill-typed values are a `ValueError`
that names the field and the value.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "from_dict",
    "load_yaml",
    "register_preset",
    "presets",
    "resolve_scenario",
    "require",
]

T = TypeVar("T")
_PRESETS: dict[str, dict[str, Any]] = {}


def require(condition: bool, field: str, value: Any, rule: str) -> None:
    """Raise `ValueError("<field> must be <rule>, got <value>")` unless `condition`."""
    if not condition:
        raise ValueError(f"{field} must be {rule}, got {value!r}")


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ValueError(f"{where} must have {len(args)} items, got {value!r}")
            items = [_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None) and value is None:
                return None
            try:
                return _convert(arg, value, where)
            except ValueError:
                continue
        raise ValueError(f"{where} has the wrong type: {value!r}")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses.

    An unknown key, a wrong type or a value the dataclass rejects raises
    `ValueError` naming the dotted field path.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field {prefix}{unknown[0]!s} (known: {sorted(names)})")
    kwargs = {k: _convert(hints[k], v, f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping from `path`."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"scenario file {os.fspath(path)!r} must hold a mapping of fields")
    return data


def register_preset(env_key: str, name: str, scenario: Any) -> None:
    """Register a named scenario preset for an environment (`env_key`: the env's class name)."""
    _PRESETS.setdefault(env_key, {})[name] = scenario


def presets(env_key: str) -> dict[str, Any]:
    """The presets registered for an environment, by name."""
    return dict(_PRESETS.get(env_key, {}))


def resolve_scenario(cls: type[T], env_key: str, scenario: Any = None) -> T:
    """A preset name, a YAML path, a dict or an instance -> a validated `cls`.

    `None` means the "default" preset.
    """
    if scenario is None:
        scenario = "default"
    if isinstance(scenario, cls):
        return scenario
    if isinstance(scenario, Mapping):
        return from_dict(cls, scenario)
    if isinstance(scenario, (str, os.PathLike)):
        text = os.fspath(scenario)
        if text.endswith((".yml", ".yaml")):
            if not os.path.isfile(text):
                raise ValueError(f"scenario file {text!r} does not exist")
            data = load_yaml(text)
            data.pop("env", None)  # files may say which env they are for
            return from_dict(cls, data)
        known = _PRESETS.get(env_key, {})
        if text not in known:
            raise ValueError(f"unknown scenario {text!r} for {env_key}; presets: {sorted(known)}")
        return known[text]
    raise ValueError(f"scenario must be a preset name, a YAML path, a dict or a {cls.__name__}, got {scenario!r}")
