"""Method parameter values from users (`--param`, grid files, the API): names and types checked once.

A method's parameters are the fields of its `Params` dataclass; a value must have the field's type,
except that an integer is accepted (and stored as a float) for a float field, so alpha=1 and
alpha=1.0 are the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bench.config import ConfigError

TYPE_NAMES = {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}


def param_kinds(method: str) -> dict[str, str]:
    """Parameter name -> type name ('float', 'int', 'bool', 'str', or another annotation) of `method`."""
    from bench.methods import get_method

    return {f.name: str(f.type) for f in dataclasses.fields(get_method(method).Params)}


def as_stored(kind: str, value: Any) -> Any:
    """An integer given for a float field, as the float it is stored as (alpha=1 is alpha=1.0); else `value`."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if kind == "float" and number else value


def check_value(method: str, name: str, value: Any) -> Any:
    """`value` for parameter `name` of `method`, as stored; ConfigError for an unknown name or a wrong type."""
    kinds = param_kinds(method)
    if name not in kinds:
        listed = ", ".join(sorted(kinds)) or "none"
        raise ConfigError(f"unknown parameter(s) {name} for method {method!r}; it takes: {listed}")
    kind = kinds[name]
    if kind == "float" and isinstance(as_stored(kind, value), float):
        return as_stored(kind, value)
    fits = {"int": isinstance(value, int) and not isinstance(value, bool), "bool": isinstance(value, bool),
            "str": isinstance(value, str)}.get(kind, kind not in TYPE_NAMES)
    if not fits:
        raise ConfigError(f"parameter {name} of method {method!r} takes {TYPE_NAMES[kind]}, got {value!r}")
    return value


def check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of `params` through check_value."""
    return {name: check_value(method, name, value) for name, value in params.items()}
