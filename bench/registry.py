"""What the task and model registries share: registering a class under its name, and looking one up."""

from __future__ import annotations

from typing import Any, TypeVar

from bench.config import ConfigError

T = TypeVar("T")


def add(registry: dict[str, Any], cls: T, kind: str) -> T:
    """Register `cls` under `cls.name`; a missing name or a name taken by another class is a ValueError."""
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} has no name")
    if name in registry and registry[name] is not cls:
        raise ValueError(f"{kind} name {name!r} registered twice")
    registry[name] = cls
    return cls


def lookup(registry: dict[str, Any], name: str, kind: str) -> Any:
    """The class registered as `name`; an unknown name is a ConfigError listing the registered ones."""
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r}; choose from {', '.join(sorted(registry))}{PLUGIN_HINT}")
    return registry[name]


# What an unknown name's message adds: a part of the user's own is loaded from its file first.
PLUGIN_HINT = " (one of your own: load its file with `bench --plugin FILE.py ...` or a grid file's plugins = [...])"
