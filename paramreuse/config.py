"""Configuration as data: dataclasses filled from TOML, with unknown keys caught and corrected."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from paramreuse.errors import ParamreuseError

T = TypeVar("T")


class ConfigError(ParamreuseError):
    """A configuration file or key that cannot be used."""


def check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise ConfigError naming the closest valid choice when ``value`` is not one of ``choices``.

    >>> check_choice("train.optimizer", "sgd", ("adam", "sgd"))
    """
    if value in choices:
        return
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{where}: unknown value {value!r}; {hint}use one of {', '.join(choices)}")


def check_at_least(config: object, names: tuple[str, ...], low: float, bound: str | None = None) -> None:
    """Raise ConfigError for the first field of ``names`` below ``low`` (a field left at None is not set).

    ``bound`` is how the message states the limit (default ``at least {low}``).

    >>> from types import SimpleNamespace
    >>> check_at_least(SimpleNamespace(seeds=3, tolerance=None), ("seeds", "tolerance"), 1)
    >>> check_at_least(SimpleNamespace(seeds=0), ("seeds",), 1)
    Traceback (most recent call last):
    paramreuse.config.ConfigError: seeds must be at least 1, got 0
    """
    for name in names:
        value = getattr(config, name)
        if value is not None and value < low:
            raise ConfigError(f"{name} must be {bound or f'at least {low}'}, got {value}")


DROP_BOUND = ">= 0 (a drop in metric units)"  # how a tolerance's lower limit is stated


def from_mapping(cls: type[T], mapping: dict[str, Any], where: str = "config", base: T | None = None) -> T:
    """Build dataclass ``cls`` from ``mapping``, recursing into nested dataclasses.

    Keys not given keep their value in ``base`` (default: ``cls()``), so a nested table
    overrides only what it names. Unknown keys raise ConfigError naming the closest known key.
    """
    base = cls() if base is None else base
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a table of keys, got {type(mapping).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in mapping.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = from_mapping(kind, value, f"{where}.{key}", getattr(base, key))
        elif typing.get_origin(kind) is tuple:
            values[key] = _checked_list(value, kind, f"{where}.{key}")
        else:
            values[key] = _checked(value, kind, f"{where}.{key}")
    try:  # a dataclass checks its own choices and ranges when built; say where in the file
        return dataclasses.replace(base, **values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _checked_list(value: Any, kind: Any, where: str) -> tuple:
    """A TOML array for a ``tuple[X, ...]`` field, each scalar item checked against X."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, e.g. [{value!r}], got {value!r}")
    item = typing.get_args(kind)[0] if typing.get_args(kind)[1:] == (Ellipsis,) else None
    if item in (int, float, str, bool):
        return tuple(_checked(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


def _checked(value: Any, kind: Any, where: str) -> Any:
    """Reject a value of the wrong scalar type (an int is fine where a float is expected)."""
    allowed = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, type(int | None)) else (kind,)
    scalars = [k for k in allowed if k in (int, float, str, bool)]
    if value is None and type(None) in allowed:
        return value
    if not scalars:
        return value
    ok = any(isinstance(value, k) and not (k is int and isinstance(value, bool)) for k in scalars)
    if not ok and float in scalars and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        names = " or ".join(k.__name__ for k in scalars)
        raise ConfigError(f"{where} must be {names}, got {value!r}")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables; a missing file or invalid TOML is one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_toml(cls: type[T], path: str | Path) -> T:
    """Read a TOML file into dataclass ``cls``."""
    return from_mapping(cls, read_toml(path), str(path))


def one_length(epochs: Any, steps: Any, where: str = "") -> None:
    """A training length is epochs or steps, never both (a config table's keys)."""
    if epochs is not None and steps is not None:
        raise ConfigError(f"{where}epochs ({epochs}) and steps ({steps}) are both set; give one: epochs counts "
                          "passes over the shots (min_steps may raise it), steps exact optimiser steps")  # fmt: skip
