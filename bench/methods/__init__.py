"""Method registry. A new method is one file here: every module of this package is imported (names
starting with "_" excepted), and its `@register` classes are the methods. A file elsewhere is loaded
with `load_plugin`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

from bench.config import ConfigError
from bench.methods.base import (
    REGISTRY,
    Batch,
    DuplicateMethodError,
    Method,
    ModelOutput,
    ThesisSettings,
    TrainState,
    get_method,
    method_class,
    method_order,
    method_sort_key,
    register,
    resolve_params,
    validate_config,
)

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

_PLUGINS: dict[Path, list[str]] = {}  # resolved path -> the names it registered


def load_plugin(path: str | Path) -> list[str]:
    """Import the user's method file `path` (under a module name of its own) and return the names of the
    methods it registered. Loading the same file again returns the same names without re-importing it.

    ConfigError (one line) when the file is missing, fails to import, registers no method, or registers a
    name that is taken; nothing it registered then stays registered.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"method plugin {file}: no such file")
    file = file.resolve()
    if file in _PLUGINS:
        return list(_PLUGINS[file])
    digest = hashlib.sha256(str(file).encode()).hexdigest()[:12]
    module_name = f"bench_plugin_{file.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"method plugin {file}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    before = dict(REGISTRY)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name

    def undo() -> None:
        sys.modules.pop(module_name, None)
        for name in set(REGISTRY) - set(before):
            del REGISTRY[name]

    try:
        spec.loader.exec_module(module)
    except DuplicateMethodError as err:
        undo()
        raise ConfigError(f"method plugin {file}: {err}") from err
    except Exception as err:
        undo()
        raise ConfigError(f"method plugin {file}: import failed: {type(err).__name__}: {err}") from err
    added = [name for name in REGISTRY if name not in before]
    if not added:
        undo()
        raise ConfigError(f"method plugin {file}: registers no method (decorate a Method subclass with @register)")
    _PLUGINS[file] = added
    return list(added)


__all__ = [
    "REGISTRY",
    "Batch",
    "Method",
    "ModelOutput",
    "ThesisSettings",
    "TrainState",
    "get_method",
    "load_plugin",
    "method_class",
    "method_order",
    "method_sort_key",
    "register",
    "resolve_params",
    "validate_config",
]
