"""The recipe table (bench/recipes.toml): per-dataset numbers of the thesis and of methods' papers.

Keyed by a dataset's recipe name (`DatasetSpec.recipe`). The table is data, read once; every layer may
read it (it imports nothing from bench), and the planning chain is what applies it to a run's fields.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

GENERIC = "generic"
_TABLE = Path(__file__).with_name("recipes.toml")


@dataclass(frozen=True)
class Recipe:
    """One dataset's block of the table; `name` is the block used (GENERIC when the dataset has none)."""

    name: str
    asked: str  # the recipe name the dataset asked for
    values: Mapping[str, Any]

    @property
    def is_generic(self) -> bool:
        return self.name == GENERIC and self.asked != GENERIC

    @property
    def source(self) -> str:
        return str(self.values.get("source", ""))

    def get(self, key: str) -> Any:
        if key not in self.values:
            raise KeyError(f"recipe {self.name!r} has no {key!r}")
        return self.values[key]

    def model(self, model: str) -> dict[str, Any]:
        """The block's parameter values for a model ({} when it sets none)."""
        return dict(self.values.get("models", {}).get(model, {}))

    def method(self, method: str) -> dict[str, Any]:
        """The block's values for a method's paper settings ({} when it sets none)."""
        return dict(self.values.get("methods", {}).get(method, {}))


@functools.cache
def _table() -> dict[str, Any]:
    with _TABLE.open("rb") as handle:
        return tomllib.load(handle)


def recipe_names() -> list[str]:
    """The blocks of the table (GENERIC included)."""
    return list(_table())


def recipe(name: str) -> Recipe:
    """The block `name`, or the generic block (named as such) when the table has none for it."""
    table = _table()
    used = name if name in table else GENERIC
    return Recipe(used, name, table[used])
