"""`bench reproduce PRESET`: the main job: train a preset's grid, then write and print its table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from bench import api
from bench.cli_runs import with_execution_options
from bench.config import PROFILES, ConfigError


def _parse_datasets(value: str) -> tuple[str, ...]:
    names = tuple(d.strip() for d in value.split(",") if d.strip())
    if not names:
        raise ConfigError("--dataset needs at least one of mosi, mosei")
    return names


@with_execution_options(executor="local")
def reproduce(
    preset: str = typer.Argument("table-6.10", help="Preset to reproduce (e.g. table-6.10) or a grid file."),
    profile: str = typer.Option("quick", help=f"Data/epochs profile: {', '.join(PROFILES)}."),
    dataset: str = typer.Option("mosi,mosei", help="Dataset families, comma-separated."),
    source: str = typer.Option("auto", help="auto (real files if $BENCH_DATA_DIR has them), synth, real."),
    seeds: str = typer.Option("0,1,2,3,4", help="Seeds, comma-separated."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where results are stored (resumable)."),
    out_dir: Path = typer.Option(Path("reports"), help="Where the table files are written."),
    execution: dict[str, Any] | None = None,
) -> None:
    """Train every run of PRESET that is not stored yet, then write <out-dir>/<preset>.{md,tex,csv,html}."""

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    selection = {"profile": profile, "datasets": _parse_datasets(dataset), "source": source, "seeds": seeds}
    started = time.perf_counter()
    rows = api.grid(preset, runs_dir=runs_dir, echo=typer.echo, **_two_local_workers(execution or {}), **selection)
    typer.echo(f"grid finished in {(time.perf_counter() - started) / 60:.1f} min")
    paths = api.write_tables(preset, runs_dir, out_dir, vs_thesis=True, **selection)
    typer.echo(paths["md"].read_text(encoding="utf-8"))
    typer.echo("written: " + ", ".join(str(p) for p in paths.values()))
    if not api.all_ok(rows):
        raise typer.Exit(1)


def _two_local_workers(execution: dict[str, Any]) -> dict[str, Any]:
    """The local executor with 2 workers unless told otherwise (reproduce's default)."""
    told = execution.get("workers") is not None or "workers" in execution.get("exec_opts", {})
    if execution.get("executor") == "local" and not told:
        return {**execution, "workers": 2}
    return execution


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
