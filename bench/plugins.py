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
from bench.data import DataError
from bench.data.registry import load_spec_file

ENV_VAR = "BENCH_PLUGINS"
_LOADED: dict[str, list[str]] = {}  # resolved path -> the names it registered


def _registries() -> dict[str, dict]:
    import bench.methods
    import bench.models
    import bench.tasks

    return {"method": bench.methods.REGISTRY, "model": bench.models.REGISTRY, "task": bench.tasks.REGISTRY}


def load(path: str | os.PathLike[str]) -> list[str]:
    """Import a plugin file once (under a module name of its own); 'kind name' of each part it registered.

    One-line ConfigError when the file is missing, fails to import, registers nothing, or registers a
    name that is taken; nothing it registered then stays registered. Loading a file again is harmless.
    """
    file = Path(path).expanduser()
    if not file.is_file() or file.suffix not in (".py", ".toml"):
        raise ConfigError(f"plugin {file}: no such file (a .py file, or a dataset spec .toml)")
    file = file.resolve()
    key = str(file)
    if key in _LOADED:
        return list(_LOADED[key])
    if file.suffix == ".toml":
        _LOADED[key] = [f"dataset {_load_dataset_spec(file)}"]
        return list(_LOADED[key])
    registries = _registries()
    before = {kind: dict(registry) for kind, registry in registries.items()}
    module_name = f"bench_plugin_{file.stem.replace('-', '_')}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plugin {file}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name

    def undo() -> None:
        sys.modules.pop(module_name, None)
        for kind, registry in registries.items():
            for name in set(registry) - set(before[kind]):
                del registry[name]

    try:
        spec.loader.exec_module(module)
    except ValueError as err:  # a registry refuses a name that is taken
        undo()
        raise ConfigError(f"plugin {file}: {err}") from err
    except (Exception, SystemExit, KeyboardInterrupt) as err:  # a plugin's sys.exit(0) must not end bench with 0
        undo()
        raise ConfigError(f"plugin {file}: import failed: {type(err).__name__}: {err}") from err
    added = [f"{kind} {name}" for kind, registry in registries.items() for name in registry
             if name not in before[kind]]
    if not added:
        undo()
        raise ConfigError(f"plugin {file}: registers no method, model or task (decorate a Method subclass "
                          "with bench.methods.register, a Model with bench.models.register, ...)")
    _LOADED[key] = added
    return list(added)


def _load_dataset_spec(file: Path) -> str:
    """Register a dataset spec file (bench.data.registry.load_spec_file); its name."""

    try:
        return load_spec_file(file).name
    except DataError as err:
        raise ConfigError(str(err)) from err


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
