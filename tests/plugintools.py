"""Loading a plugin in tests without leaving it registered for the rest of the session."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from bench import plugins

ROOT = Path(__file__).resolve().parents[1]
ADVERSARIAL_PLUGIN = ROOT / "examples" / "plugins" / "adversarial.py"


@contextlib.contextmanager
def plugin_loaded(path: Path = ADVERSARIAL_PLUGIN) -> Iterator[list[str]]:
    """Load a plugin for the block; afterwards every registry, the capability list, the loaded-plugin record
    and BENCH_PLUGINS are what they were before (other tests see only the built-in parts)."""
    with registries_restored():
        yield plugins.load(path)


@contextlib.contextmanager
def registries_restored() -> Iterator[None]:
    """Whatever the block loads (plugins, through the CLI's --plugin or a grid file too), every registry, the
    capability list, the dataset specs, the loaded-plugin records and BENCH_PLUGINS are restored after it."""
    import bench.data.registry
    import bench.methods
    import bench.models
    import bench.tasks

    registries = (bench.methods.REGISTRY, bench.models.REGISTRY, bench.tasks.REGISTRY, bench.models.CAPABILITIES,
                  plugins._LOADED, plugins._SOURCES, bench.data.registry.DATASETS, bench.data.registry._FROM_FILES)
    saved = [dict(registry) for registry in registries]
    env = os.environ.get(plugins.ENV_VAR)
    try:
        yield
    finally:
        for registry, before in zip(registries, saved, strict=True):
            registry.clear()
            registry.update(before)
        if env is None:
            os.environ.pop(plugins.ENV_VAR, None)
        else:
            os.environ[plugins.ENV_VAR] = env


def plugin_module(method_or_model: str) -> ModuleType:
    """The module object of the loaded plugin that registered this method (or model) name."""
    import bench.methods
    import bench.models

    cls = bench.methods.REGISTRY.get(method_or_model) or bench.models.REGISTRY[method_or_model]
    return sys.modules[cls.__module__]
