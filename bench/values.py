"""Typed values from users (method, model and task parameters): one check for every parameter kind.

Core layer: imports nothing from bench but bench.config. A float field takes an integer too (stored as
the float it is, so alpha=1 and alpha=1.0 are one run); no field takes NaN or +-Infinity anywhere inside
its value (JSON and TOML both parse them, and range checks written `x < 0` are False for NaN).
"""

from __future__ import annotations

from typing import Any

from bench.config import ConfigError, non_finite

__all__ = ["TYPE_NAMES", "as_stored", "check_finite", "check_typed", "non_finite"]

TYPE_NAMES = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}


def check_finite(what: str, value: Any) -> Any:
    """`value`, or a ConfigError naming `what` when it holds NaN or +-Infinity."""
    bad = non_finite(value)
    if bad is not None:
        raise ConfigError(f"{what} must be a finite number, got {bad}")
    return value


def as_stored(kind: str, value: Any) -> Any:
    """An integer given for a float field, as the float it is stored as (alpha=1 is alpha=1.0); else `value`."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if kind == "float" and number else value


def check_typed(owner: str, name: str, kind: str, value: Any) -> Any:
    """`value` for parameter `name` of `owner` (e.g. "method 'ogm'") as stored; ConfigError for a wrong
    type or a non-finite number. `kind` is the field's annotation ('float', 'int', 'bool', 'str' or other:
    only the finiteness is checked then)."""
    check_finite(f"parameter {name} of {owner}", value)
    try:
        stored = as_stored(kind, value)
    except OverflowError as err:  # an integer too large for a float
        raise ConfigError(f"parameter {name} of {owner} is out of range: {value}") from err
    if kind == "float" and isinstance(stored, float):
        return stored
    fits = {"int": isinstance(value, int) and not isinstance(value, bool), "bool": isinstance(value, bool),
            "str": isinstance(value, str)}.get(kind, kind not in TYPE_NAMES)
    if not fits:
        raise ConfigError(f"parameter {name} of {owner} takes {TYPE_NAMES[kind]}, got {value!r}")
    if kind == "int" and not -(2**63) <= value < 2**63:  # the store's typed column is an int64
        raise ConfigError(f"parameter {name} of {owner} is out of range: {value}")
    return value
