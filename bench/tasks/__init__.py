"""Task registry: classification and regression. A new task is one file here (discovered on import)."""

from __future__ import annotations

import importlib
import pkgutil

from bench.tasks.base import (
    DEFAULT_TASK,
    REGISTRY,
    Selection,
    Task,
    all_result_columns,
    default_task_params,
    make_task,
    metric_direction,
    register,
    task_class,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["DEFAULT_TASK", "REGISTRY", "Selection", "Task", "all_result_columns", "default_task_params",
           "make_task", "metric_direction", "register", "task_class"]
