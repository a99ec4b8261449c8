"""`bench methods`, `bench models`, `bench tasks`, `bench datasets`: what each registry holds, with what each
entry requires or offers, its tasks, parameters and defaults, version and source (built-in or plugin file);
and `bench check FILE.py`: the conformance suite on a user's plugin (bench.conformance)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from typing import Any

import typer

from bench import conformance
from bench.data.registry import DATASETS, spec_source
from bench.methods import REGISTRY as METHODS
from bench.methods import method_order
from bench.models import REGISTRY as MODELS
from bench.plugins import source_of
from bench.tasks import REGISTRY as TASKS


def _source(kind: str, name: str) -> str:
    found = source_of(kind, name)
    return f"plugin {found.path} (sha256 {found.sha256[:12]})" if found is not None else "built-in"


def _defaults(params_class: type) -> str:
    """'alpha=0.5, form=official' of a Params dataclass ('none' without fields)."""
    shown = []
    for f in dataclasses.fields(params_class):
        if f.default is not dataclasses.MISSING:
            shown.append(f"{f.name}={f.default!r}")
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            shown.append(f"{f.name}={f.default_factory()!r}")  # type: ignore[misc]
        else:
            shown.append(f"{f.name} (required)")
    return ", ".join(shown) or "none"


def _print_entries(entries: Iterable[tuple[str, list[tuple[str, str]]]]) -> None:
    for name, lines in entries:
        typer.echo(name)
        width = max(len(label) for label, _ in lines)
        for label, text in lines:
            typer.echo(f"  {label:<{width}}  {text}")


def methods_command() -> None:
    """Every registered method: tasks, required model capabilities, default model, parameters, version, source."""
    entries = []
    for name in method_order():
        cls = METHODS[name]
        if name.startswith("test_"):
            continue
        lines = [("description", cls.description or "-"), ("tasks", ", ".join(cls.tasks)),
                 ("requires", ", ".join(sorted(cls.requires)) or "nothing"), ("default model", cls.default_model),
                 ("modalities", f"{cls.min_modalities} to {cls.max_modalities}"),
                 ("parameters", _defaults(cls.Params)), ("version", str(cls.version)),
                 ("source", _source("method", name))]
        if cls.provenance:
            lines.append(("provenance", cls.provenance))
        entries.append((f"{name} ({cls.display_name})", lines))
    _print_entries(entries)


def models_command() -> None:
    """Every registered model: the capabilities it offers, modality counts, parameters, version, source."""
    _print_entries(
        (name, [("description", cls.description or "-"), ("offers", ", ".join(sorted(cls.capabilities)) or "nothing"),
                ("modalities", f"{cls.min_modalities} to {cls.max_modalities}"),
                ("runs", ", ".join(m for m in method_order() if not m.startswith("test_")
                                   and METHODS[m].requires <= cls.capabilities) or "none"),
                ("parameters", _defaults(cls.Params)), ("version", str(cls.version)),
                ("source", _source("model", name))])
        for name, cls in sorted(MODELS.items()))


def tasks_command() -> None:
    """Every registered task: its metrics and headline, options, version, source, and the methods with a form."""
    _print_entries(
        (name, [("description", cls.description or "-"), ("headline", cls.headline or "-"),
                ("metrics", ", ".join(cls.metric_directions)), ("options", _defaults(cls.Params)),
                ("methods", ", ".join(m for m in method_order() if name in METHODS[m].tasks
                                      and not m.startswith("test_"))),
                ("version", str(cls.version)), ("source", _source("task", name))])
        for name, cls in sorted(TASKS.items()))


def datasets_command() -> None:
    """Every registered dataset spec: modalities, labels, metric set, synthetic or real, version, source."""
    entries = []
    for name, spec in sorted(DATASETS.items()):
        labels = spec.labels
        lines = [("display", spec.display), ("modalities", ", ".join(spec.modalities)),
                 ("labels", f"{labels.kind}; rules {', '.join(labels.rules) or '-'}"),
                 ("metric set", spec.metric_set), ("data", "synthetic" if spec.synthetic else "real files"),
                 ("version", str(spec.version)), ("source", spec_source(name))]
        if spec.like:
            lines.insert(1, ("derived from", spec.like))
        entries.append((name, lines))
    _print_entries(entries)


def check_command(paths: list[str] = typer.Argument(..., help="Plugin files (.py) that register methods, models "
                                                    "or tasks (a method and the model it needs together).")) -> None:
    """Check a plugin: each declared capability's contract on a tiny batch (output width, modality outputs that
    sum to the fused output, detached outputs, zero-input passes, ...), then one smoke run per method x model x
    task it offers. Exit 1 when a check fails."""

    def show(check: conformance.Check) -> None:
        typer.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.what}")
        for problem in check.problems:
            typer.echo(f"      {problem}")

    checks = conformance.check_plugin(paths, progress=show)
    failed = [c for c in checks if not c.ok]
    typer.echo(f"{len(checks) - len(failed)} of {len(checks)} checks hold" + (f"; {len(failed)} fail" if failed
                                                                                else ""))
    if failed:
        sys.exit(1)
    if not checks:
        typer.echo("nothing to check: the file registers no model, and no method that runs on a registered model")


def register(app: Any) -> None:
    """Add the registry listings and `check` to the bench app."""
    app.command("methods")(methods_command)
    app.command("models")(models_command)
    app.command("tasks")(tasks_command)
    app.command("datasets")(datasets_command)
    app.command("check")(check_command)
