"""Typed parameter groups addressed by dotted keys (``augment.mask.prob``).

A plug-in declares its parameters as a dataclass deriving from :class:`Params`; each field's
``metadata`` may carry ``help``, ``low``/``high`` bounds and ``choices``. The same dotted key names
a parameter in YAML, in ``--set key=value``, in the config object and in results tables.
Values given as text are parsed with ``yaml.safe_load`` (never evaluated as code).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from typing import Any

import yaml

from rectune.errors import ConfigError, closest


def param(default: Any, help: str, low: float | None = None, high: float | None = None,
          choices: tuple | None = None, default_factory: Any = None) -> Any:
    """A dataclass field with its documentation and bounds."""
    meta = {"help": help, "low": low, "high": high, "choices": choices}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Params:
    """Base of every parameter group: checks types, bounds and choices of its fields."""

    def check(self, prefix: str) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f"{prefix}.{f.name}", getattr(self, f.name), hints[f.name], f.metadata))

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def check_value(key: str, value: Any, typ: Any, meta: typing.Mapping) -> Any:
    """``value`` coerced to ``typ`` and checked against the ``low``/``high``/``choices`` of ``meta``."""
    value = _coerce(key, value, typ)
    low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
    if choices is not None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in choices:
                raise ConfigError(f"{key}: '{v}' is not one of {list(choices)}")
    for v in value if isinstance(value, list) and (low is not None or high is not None) else [value]:
        if low is not None and v < low or high is not None and v > high:
            rng = f"[{low}, {high}]" if low is not None and high is not None else (
                f">= {low}" if low is not None else f"<= {high}")
            raise ConfigError(f"{key}: {v} is out of range; expected a value in {rng}")
    return value


def _coerce(key: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(typ)
        if args and args[0] in (int, float, str, bool):
            return [_coerce(key, parse_value(v) if args[0] is not str and isinstance(v, str) else v, args[0])
                    for v in value]
        return list(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        # YAML reads .nan and .inf as floats: NaN passes every bound (comparisons with it are
        # false) and infinity has no integer, so neither may reach a bound check or a trial
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: {value} is not a finite number")
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if typ is float and isinstance(value, int) and abs(value) > sys.float_info.max:
            raise ConfigError(f"{key}: an integer beyond the range of a float is not a finite number")
        return typ(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected text, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """``0.3`` -> 0.3, ``true`` -> True, ``[a, b]`` -> ['a', 'b'], anything else stays text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_sets(items: typing.Iterable[str], option: str = "--set") -> dict[str, Any]:
    """``["augment.mask.prob=0.3"]`` -> ``{"augment.mask.prob": 0.3}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} '{item}': expected KEY=VALUE (e.g. augment.mask.prob=0.3)")
        out[key.strip()] = parse_value(value.strip())
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings (as YAML gives them) -> dotted keys."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unknown_key(key: str, valid: list[str]) -> ConfigError:
    close = closest(key, valid)
    hint = f" (did you mean '{close}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; valid keys: {', '.join(valid)}")
