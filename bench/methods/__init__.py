"""Method registry. A new method is one file here plus its name in BUILTIN_MODULES."""

from __future__ import annotations

import importlib

from bench.methods.base import (
    REGISTRY,
    Batch,
    BuildContext,
    Method,
    ModelOutput,
    OptimizerPlan,
    TrainState,
    get_method,
    register,
    resolve_params,
    validate_config,
)

BUILTIN_MODULES = ("baselines", "ogm", "agm", "pmr", "reconboost")

for _module in BUILTIN_MODULES:
    importlib.import_module(f"bench.methods.{_module}")

__all__ = [
    "REGISTRY",
    "Batch",
    "BuildContext",
    "Method",
    "ModelOutput",
    "OptimizerPlan",
    "TrainState",
    "get_method",
    "register",
    "resolve_params",
    "validate_config",
]
