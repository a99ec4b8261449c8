"""A user's own methods, models and tasks, loaded from a Python file: `bench --plugin my_method.py ...`.

A plugin file registers its parts with the registries' decorators (`bench.methods.register`,
`bench.models.register`, `bench.tasks.register`), exactly as the built-in files do. The paths of the
loaded plugins are kept in the BENCH_PLUGINS environment variable, so spawned workers (and Slurm jobs,
which inherit the environment) load the same files before they build a run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from bench.config import ConfigError

ENV_VAR = "BENCH_PLUGINS"
_LOADED: dict[str, list[str]] = {}  # resolved path -> the names it registered


def _registries() -> dict[str, dict]:
    import bench.methods
    import bench.models
    import bench.tasks

    return {"method": bench.methods.REGISTRY, "model": bench.models.REGISTRY, "task": bench.tasks.REGISTRY}


def load(path: str | os.PathLike[str]) -> list[str]:
    """Import a plugin file once; the 'kind name' of each part it registered. One clear ConfigError for a
    missing file, a file that registers nothing, or a name that is registered already."""
    file = Path(path).expanduser().resolve()
    key = str(file)
    if key in _LOADED:
        return _LOADED[key]
    if not file.is_file() or file.suffix != ".py":
        raise ConfigError(f"plugin {path}: no such Python file")
    registries = _registries()
    before = {kind: set(registry) for kind, registry in registries.items()}
    module_name = f"bench_plugin_{file.stem}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as err:
        # a failed plugin leaves nothing behind: the parts it registered before failing are removed
        sys.modules.pop(module_name, None)
        _forget_new(registries, before)
        if isinstance(err, ValueError):  # a registry refuses a second class under a taken name
            raise ConfigError(f"plugin {path}: {err}") from err
        raise
    added = [f"{kind} {name}" for kind, registry in registries.items() for name in registry
             if name not in before[kind]]
    if not added:
        raise ConfigError(f"plugin {path} registers no method, model or task "
                          "(decorate its classes with bench.methods.register, bench.models.register, ...)")
    _LOADED[key] = added
    return added


def _forget_new(registries: dict[str, dict], before: dict[str, set[str]]) -> None:
    """Remove every name registered since `before` was taken."""
    for kind, registry in registries.items():
        for name in set(registry) - before[kind]:
            del registry[name]


def activate(paths: list[str] | tuple[str, ...]) -> list[str]:
    """Load each plugin here and record it in BENCH_PLUGINS for the worker processes."""
    names = []
    for path in paths:
        names.extend(load(path))
        resolved = str(Path(path).expanduser().resolve())
        known = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
        if resolved not in known:
            os.environ[ENV_VAR] = os.pathsep.join([*known, resolved])
    return names


def load_from_environment() -> None:
    """Load the plugins named in BENCH_PLUGINS (a worker process, before it builds a run)."""
    for path in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if path:
            load(path)
