"""A user's own methods, models and tasks, loaded from a Python file: `bench --plugin my_method.py ...`.

A plugin file registers its parts with the registries' decorators (`bench.methods.register`,
`bench.models.register`, `bench.tasks.register`), exactly as the built-in files do. The paths of the
loaded plugins are kept in the BENCH_PLUGINS environment variable, so spawned workers (and Slurm jobs,
which inherit the environment) load the same files before they build a run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import CODE_IDENTITY, ConfigError
from bench.data import DataError
from bench.data.registry import forget_spec, load_spec_file, spec_for

ENV_VAR = "BENCH_PLUGINS"
_LOADED: dict[str, list[str]] = {}  # resolved path -> the names it registered
# (kind, name) -> the plugin file that defined it: its resolved path and SHA-256 when loaded
_SOURCES: dict[tuple[str, str], PluginSource] = {}
CODE_PARTS = ("dataset", "method", "model", "task")  # the axes whose code a run id covers (RunConfig.code)


@dataclass(frozen=True)
class PluginSource:
    """The file a plugin part came from, as it was when loaded."""

    path: str
    sha256: str


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    digest = file_sha256(file)
    if key in _LOADED:
        if _loaded_digest(key) == digest:
            return list(_LOADED[key])
        _unregister(key)  # edited since it was loaded: register what it says now
    if file.suffix == ".toml":
        _LOADED[key] = [f"dataset {_load_dataset_spec(file)}"]
        _remember_sources(_LOADED[key], PluginSource(key, digest))
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
    _remember_sources(added, PluginSource(key, digest))
    return list(added)


def _remember_sources(parts: list[str], source: PluginSource) -> None:
    for part in parts:
        kind, _, name = part.partition(" ")
        _SOURCES[(kind, name)] = source


def _loaded_digest(key: str) -> str | None:
    return next((source.sha256 for source in _SOURCES.values() if source.path == key), None)


def source_of(kind: str, name: str) -> PluginSource | None:
    """The plugin file that defined `kind` `name` ("method", "mmcosine"), or None for a built-in part."""
    return _SOURCES.get((kind, name))


def loaded_files() -> list[str]:
    """The resolved paths of every plugin file loaded in this process."""
    return list(_LOADED)


def unload(path: str | os.PathLike[str]) -> None:
    """Forget a plugin file and unregister what it registered (tests; a file loaded again after an edit)."""
    key = str(Path(path).expanduser().resolve())
    _unregister(key)
    known = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p and p != key]
    if known:
        os.environ[ENV_VAR] = os.pathsep.join(known)
    else:
        os.environ.pop(ENV_VAR, None)


def _unregister(key: str) -> None:
    """Unregister what the plugin file `key` (a resolved path) registered, and drop its module."""
    registries = _registries()
    for part in _LOADED.pop(key, []):
        kind, _, name = part.partition(" ")
        _SOURCES.pop((kind, name), None)
        if kind in registries:
            registries[kind].pop(name, None)
        elif kind == "dataset":
            forget_spec(name)
    for name, module in list(sys.modules.items()):
        if name.startswith("bench_plugin_") and getattr(module, "__file__", None) == key:
            del sys.modules[name]


# -- code identity: what a run id says about the code ---------------------------------------------------


def _part_version(kind: str, name: str) -> int | None:
    """The declared `version` of a registered part, or None when `name` is not registered."""
    if kind == "dataset":
        try:
            return int(spec_for(name).version)
        except DataError:
            return None
    part = _registries()[kind].get(name)
    return None if part is None else int(getattr(part, "version", 1))


def part_identity(kind: str, name: str) -> str | None:
    """"name@version", with "+<sha256[:16]>" of the file for a part a plugin defined; None if unknown."""
    version = _part_version(kind, name)
    if version is None:
        return None
    source = source_of(kind, name)
    suffix = f"+{source.sha256[:16]}" if source is not None else ""
    return f"{name}@{version}{suffix}"


def code_identity(cfg: Any) -> tuple[tuple[str, str], ...]:
    """RunConfig.code of `cfg`: (part, identity) for its dataset, method, model and task (known ones)."""
    pairs = []
    for kind in CODE_PARTS:
        identity = part_identity(kind, str(getattr(cfg, kind)))
        if identity is not None:
            pairs.append((kind, identity))
    return tuple(sorted(pairs))


CODE_IDENTITY.append(code_identity)  # RunConfig.replace re-pins a derived config with it


def stamp(cfg: Any) -> Any:
    """`cfg` with its `code` set to the code loaded now (a config derived from another is stamped anew)."""
    code = code_identity(cfg)
    return cfg if cfg.code == code else cfg.replace(code=code)


def restamp(cfg: Any) -> Any:
    """A config derived from a pinned one (a method's `needs`) pinned to the code of its own parts; an
    unpinned one (made by hand) stays unpinned."""
    return stamp(cfg) if cfg.code else cfg


def code_changes(cfg: Any) -> list[str]:
    """What differs between the code `cfg` was planned for and the code loaded now ("method agm@1 -> agm@2");
    empty when it matches or `cfg.code` is not pinned."""
    if not cfg.code:
        return []
    planned, now = dict(cfg.code), dict(code_identity(cfg))
    return [f"{kind} {planned.get(kind, 'none')} -> {now.get(kind, 'not loaded')}"
            for kind in CODE_PARTS if planned.get(kind) != now.get(kind)]


def plugin_files_of(cfg: Any) -> list[PluginSource]:
    """The plugin files that define a part of `cfg` (what its result row records)."""
    found = [source_of(kind, str(getattr(cfg, kind))) for kind in CODE_PARTS]
    return list(dict.fromkeys(source for source in found if source is not None))


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


def load_recorded(recorded: Iterable[Any]) -> list[str]:
    """Load the plugin files result rows record (`plugin_files`: JSON lists of {"path", "sha256"}) that are
    not loaded yet; one line per file that cannot be (gone, or failing to import)."""
    paths: dict[str, None] = {}
    for text in recorded:
        try:
            entries = json.loads(text) if isinstance(text, str) and text else []
        except ValueError:
            continue
        paths.update(dict.fromkeys(str(entry.get("path", "")) for entry in entries if isinstance(entry, dict)))
    problems = []
    for path in paths:
        if not path or path in _LOADED:
            continue
        if not Path(path).is_file():
            problems.append(f"{path}: the plugin file stored runs were trained with is gone; their method, model "
                            "or task is unknown until it is back (or pass --plugin with its new place)")
            continue
        try:
            activate([path])
        except ConfigError as err:
            problems.append(f"{path}: the plugin file stored runs were trained with does not load: {err}")
    return problems
