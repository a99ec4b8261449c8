"""Layering: the data layer never reaches up to the trainer, the methods or the models (data flows one way)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bench.data

DATA_DIR = Path(bench.data.__file__).resolve().parent
ABOVE_DATA = ("bench.train", "bench.methods", "bench.models", "bench.tasks", "bench.calibrate")
DATA_MODULES = sorted(p.stem for p in DATA_DIR.glob("*.py") if p.stem != "__init__")


def _imported_names(path: Path) -> list[str]:
    """Every module an import statement in `path` names, at the top or inside a function (lazy imports too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if not node.level else f"bench.data.{node.module}"
            names.extend([base, *(f"{base}.{alias.name}" for alias in node.names)])
    return names


def _above(name: str) -> bool:
    """Whether `name` is a module above the data layer (ABOVE_DATA), or inside one of them."""
    return any(name == top or name.startswith(f"{top}.") for top in ABOVE_DATA)


def test_the_data_layer_has_modules_to_check() -> None:
    assert {"calibrate", "loader", "synth"} <= set(DATA_MODULES)


@pytest.mark.parametrize("module", DATA_MODULES)
def test_a_data_module_imports_nothing_above_data_even_lazily(module: str) -> None:
    offending = [name for name in _imported_names(DATA_DIR / f"{module}.py") if _above(name)]
    assert offending == [], f"bench/data/{module}.py imports {offending}"


@pytest.mark.parametrize("module", DATA_MODULES)
def test_importing_a_data_module_in_a_fresh_interpreter_loads_nothing_above_data(module: str) -> None:
    inside = tuple(f"{top}." for top in ABOVE_DATA)
    script = (f"import sys, bench.data.{module}\n"
              f"print(sorted(m for m in sys.modules if m in {ABOVE_DATA!r} or m.startswith({inside!r})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"import bench.data.{module} loaded {out.stdout.strip()}"
