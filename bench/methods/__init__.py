"""Method registry. A new method is one file here: every module of this package is imported (names
starting with "_" excepted), and its `@register` classes are the methods. A file elsewhere is loaded
with `load_plugin`."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from bench.methods.base import (
    REGISTRY,
    Batch,
    BuildContext,
    DuplicateMethodError,
    Method,
    ModelOutput,
    OptimizerPlan,
    ThesisSettings,
    TrainState,
    get_method,
    method_class,
    method_order,
    method_sort_key,
    register,
    resolve_params,
    scale_gradient,
    validate_config,
)
from bench.plugins import load

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

def load_plugin(path: str | Path) -> list[str]:
    """Import a user's method file (bench.plugins.load) and return the names of the methods it registered."""

    return [part.removeprefix("method ") for part in load(path) if part.startswith("method ")]


__all__ = [
    "REGISTRY",
    "Batch",
    "BuildContext",
    "DuplicateMethodError",
    "Method",
    "ModelOutput",
    "OptimizerPlan",
    "ThesisSettings",
    "TrainState",
    "get_method",
    "load_plugin",
    "method_class",
    "method_order",
    "method_sort_key",
    "register",
    "resolve_params",
    "scale_gradient",
    "validate_config",
]
