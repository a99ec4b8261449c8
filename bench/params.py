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
from bench.values import TYPE_NAMES, as_stored, check_typed

__all__ = ["TYPE_NAMES", "as_stored", "check_params", "check_value", "param_kinds"]

def param_kinds(method: str) -> dict[str, str]:
    """Parameter name -> type name ('float', 'int', 'bool', 'str', or another annotation) of `method`."""
    from bench.methods import get_method

    return {f.name: str(f.type) for f in dataclasses.fields(get_method(method).Params)}


def check_value(method: str, name: str, value: Any) -> Any:
    """`value` for parameter `name` of `method`, as stored; ConfigError for an unknown name, a wrong type or
    a non-finite number (bench.values.check_typed)."""
    kinds = param_kinds(method)
    if name not in kinds:
        listed = ", ".join(sorted(kinds)) or "none"
        raise ConfigError(f"unknown parameter(s) {name} for method {method!r}; it takes: {listed}")
    return check_typed(f"method {method!r}", name, kinds[name], value)


def check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of `params` through check_value."""
    return {name: check_value(method, name, value) for name, value in params.items()}
