"""Layering: every module of bench sits in one layer, and imports (top-level or inside a function) point down.

    core < data < tasks, models < methods < train < plan < store, execute < report, export < api < cli

A module may import its own layer and the layers below it. The only imports that point up are the entry
points listed in UPWARD (a worker process imports the trainer), each with the reason. An import inside a
function is for a heavy module only: one whose import loads torch, scikit-learn, scipy, matplotlib or
submitit (found from the top-level imports), so reading results, listing presets and `bench --version`
stay fast; anything else is imported at the top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bench

PACKAGE = Path(bench.__file__).resolve().parent
LAYERS = ("core", "data", "tasks", "models", "methods", "train", "plan", "store", "execute", "report", "api", "cli")
# tasks and models are one level, so are store and execute, and report and export.
LEVEL = {"core": 0, "data": 1, "tasks": 2, "models": 2, "methods": 3, "train": 4, "plan": 5, "store": 6,
         "execute": 6, "report": 7, "api": 8, "cli": 9}
# Module (or package prefix) -> layer; the longest matching prefix wins.
LAYER_OF = {
    "bench": "core", "bench.config": "core", "bench.registry": "core", "bench.batch": "core",
    "bench.recipes": "core",
    "bench.data": "data", "bench.data.cli": "cli",
    "bench.tasks": "tasks", "bench.metrics": "tasks",
    "bench.models": "models",
    "bench.methods": "methods", "bench.params": "methods", "bench.plugins": "methods",
    "bench.train": "train",
    "bench.plan": "plan", "bench.presets": "plan", "bench.presets_msa": "plan",
    "bench.gridfile": "plan", "bench.selection": "plan", "bench.conformance": "plan",
    "bench.store": "store",
    "bench.execute": "execute",
    "bench.report": "report", "bench.export": "report", "bench.report.cli": "cli",
    "bench.api": "api", "bench.calibrate": "cli", "bench.perf": "api", "bench.reproduce": "cli",
    "bench.cli": "cli", "bench.cli_runs": "cli", "bench.cli_parts": "cli",
}
# Imports that point up, each an entry point: (importing module, imported module prefix).
UPWARD = {
    ("bench.execute.job", "bench.train"): "the worker entry: a job process trains",
    ("bench.execute.job", "bench.plugins"): "the worker entry loads the user's plugins before training",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def layer_of(name: str) -> str:
    matches = [prefix for prefix in LAYER_OF if name == prefix or name.startswith(f"{prefix}.")]
    return LAYER_OF[max(matches, key=len)]


def imports_of(module: str) -> list[tuple[str, bool]]:
    """(imported bench module, inside a function?) for every import statement of `module`."""
    path = PACKAGE.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only = True
        if isinstance(node, ast.Import) and not type_only:
            found.extend((alias.name, in_function) for alias in node.names if alias.name.startswith("bench"))
        elif isinstance(node, ast.ImportFrom) and not type_only:
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            if base.startswith("bench"):
                found.append((base, in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_only)

    visit(tree, False, False)
    return found


def test_every_module_has_a_layer() -> None:
    assert all(layer_of(m) in LAYERS for m in MODULES)
    assert {"bench.config", "bench.data.loader", "bench.plan.resolve", "bench.execute.scheduler"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_imports_point_down(module: str) -> None:
    own = LEVEL[layer_of(module)]
    upward = [(name, lazy) for name, lazy in imports_of(module)
              if LEVEL[layer_of(name)] > own and not any(module == m and (name == p or name.startswith(f"{p}."))
                                                          for m, p in UPWARD)]
    assert upward == [], f"{module} ({layer_of(module)}) imports {upward} from above"


HEAVY_PACKAGES = ("torch", "sklearn", "scipy", "matplotlib", "seaborn", "submitit", "tensorboard")


def _top_level_imports(module: str) -> set[str]:
    """The modules `module` imports when it is imported (module level, `if`/`try` blocks included)."""
    path = PACKAGE.parent / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = {".".join(module.split(".")[:i]) for i in range(1, len(module.split(".")))}  # parent packages
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ([node] if isinstance(node, ast.Import | ast.ImportFrom) else
                      list(ast.walk(node)) if isinstance(node, ast.If | ast.Try) else []):
            if isinstance(inner, ast.Import):
                found.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom):
                base = inner.module or ""
                if inner.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - inner.level + 1], base]).strip(".")
                found.update([base, *(f"{base}.{alias.name}" for alias in inner.names)])
    return found


def _as_module(name: str) -> str:
    """The bench module a dotted name lives in ('bench.data.registry.spec_for' -> 'bench.data.registry')."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def heavy_modules() -> set[str]:
    """Bench modules whose import loads a heavy package, following top-level imports."""
    graph = {m: _top_level_imports(m) for m in MODULES}
    heavy: set[str] = set()
    changed = True
    while changed:
        changed = False
        for module, names in graph.items():
            if module in heavy:
                continue
            if any(n.split(".")[0] in HEAVY_PACKAGES or _as_module(n) in heavy for n in names if n):
                heavy.add(module)
                changed = True
    return heavy


def test_in_function_imports_are_for_heavy_modules_only() -> None:
    heavy = heavy_modules()
    assert {"bench.train", "bench.methods", "bench.models.late_fusion"} <= heavy  # torch
    assert not {"bench.config", "bench.store", "bench.plan.deps"} & heavy
    light = sorted({(m, _as_module(name)) for m in MODULES for name, lazy in imports_of(m)
                    if lazy and name.startswith("bench") and _as_module(name) not in heavy
                    and not any(m == u and name.startswith(p) for u, p in UPWARD)})
    assert light == [], f"in-function imports of light modules (import them at the top): {light}"


GROUND = ("bench.config", "bench.store", "bench.recipes")
HEAVY = ("torch", "sklearn", "bench.methods", "bench.models", "bench.tasks", "bench.train", "bench.data.synth")


@pytest.mark.parametrize("module", GROUND)
def test_the_ground_floor_and_the_store_import_no_torch_and_no_registry(module: str) -> None:
    script = f"import sys, {module}\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn') " \
             f"or m in {HEAVY!r}))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"


@pytest.mark.parametrize("module", [m for m in MODULES if layer_of(m) == "data"])
def test_importing_a_data_module_loads_nothing_above_data(module: str) -> None:
    above = ("bench.train", "bench.methods", "bench.models", "bench.tasks", "bench.plan", "bench.store")
    script = (f"import sys, {module}\n"
              f"print(sorted(m for m in sys.modules if m.startswith({tuple(a + '.' for a in above)!r}) "
              f"or m in {above!r}))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"import {module} loaded {out.stdout.strip()}"
