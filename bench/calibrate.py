"""Calibration check: unimodal test accuracy on the surrogate vs the thesis's table 6.2.

For each modality, train the harness's unimodal model (one-layer LSTM + linear head, Adam 5e-4, the
dataset's batch size, early stopping on validation loss, best checkpoint tested) for several seeds on
synth-<like> at a profile, and compare the mean test accuracy with the thesis figure.

The targets and the tolerance are data (bench.data.calibrate); this module trains, so it sits above
bench.train, next to the other commands that train (bench.reproduce, bench.perf).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import typer

from bench.config import canonical_modalities
from bench.data import synth
from bench.data.calibrate import TARGETS, TOLERANCE
from bench.data.cli import _parse_like, data_app
from bench.data.loader import synth_dataset
from bench.data.types import DataError
from bench.plan.resolve import make_config


@dataclass(frozen=True)
class CalibrationRow:
    """Achieved vs target for one modality."""

    modality: str
    target: float
    accuracies: tuple[float, ...]  # per seed, percent (NaN for a failed run)
    ceiling: float  # oracle_accuracy: what a perfect reader of the evidence would reach
    seconds: float = float("nan")  # mean wall time of one run

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.accuracies))

    @property
    def std(self) -> float:
        finite = [a for a in self.accuracies if np.isfinite(a)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0

    @property
    def delta(self) -> float:
        return self.mean - self.target

    @property
    def within(self) -> bool:
        """Within the tolerance of the target (False when there is no target)."""
        return bool(np.isfinite(self.target)) and abs(self.delta) <= TOLERANCE


@functools.lru_cache(maxsize=4)
def _dataset_with_knobs(like: str, profile: str, knobs: tuple[tuple[str, tuple[float, float]], ...]):

    return synth_dataset(synth.synth_params(like, profile, knobs=dict(knobs)))


def _one_run(like: str, profile: str, modality: str, seed: int,
             knobs: tuple[tuple[str, tuple[float, float]], ...] = ()) -> tuple[float, float]:
    """(test accuracy in %, wall seconds) of one unimodal run; NaN accuracy when the run failed."""
    import torch

    from bench.train import train_run

    torch.set_num_threads(1)  # one core per run; parallelism comes from the workers
    cfg = make_config(f"synth-{like}", profile, method="unimodal", modalities=(modality,), seed=seed)
    dataset = _dataset_with_knobs(like, profile, knobs) if knobs else None
    result = train_run(cfg, dataset=dataset)
    if result.status != "ok":
        return float("nan"), result.wall_s
    return float(result.metrics["test_acc"]), result.wall_s


def run_calibration(like: str, profile: str = "quick", seeds: Sequence[int] = (0, 1, 2, 3, 4),
                    modalities: Sequence[str] = synth.MODALITY_ORDER, workers: int = 1,
                    knobs: dict[str, tuple[float, float]] | None = None,
                    progress: Callable[[str], None] | None = None) -> list[CalibrationRow]:
    """Train the unimodal runs and return achieved vs target per modality."""
    frozen_knobs = tuple(sorted((knobs or {}).items()))
    jobs = [(m, s) for m in modalities for s in seeds]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=min(workers, os.cpu_count() or 1)) as pool:
            futures = [pool.submit(_one_run, like, profile, m, s, frozen_knobs) for m, s in jobs]
            results = [f.result() for f in futures]
    else:
        results = []
        for m, s in jobs:
            results.append(_one_run(like, profile, m, s, frozen_knobs))
            if progress:
                progress(f"{m} seed {s}: {results[-1][0]:.2f} % in {results[-1][1]:.1f} s")
    params = synth.synth_params(like, profile, knobs=knobs)
    rows = []
    for m in modalities:
        mine = [result for (mod, _), result in zip(jobs, results, strict=True) if mod == m]
        target = TARGETS.get(like, {}).get(m, float("nan"))  # NaN: no published target (CH-SIMS-like)
        rows.append(CalibrationRow(m, target, tuple(acc for acc, _ in mine),
                                   synth.oracle_accuracy(params, m, 100_000),
                                   float(np.mean([wall for _, wall in mine]))))
    return rows


def format_table(like: str, profile: str, rows: Sequence[CalibrationRow], seeds: Sequence[int]) -> str:
    """The table `bench data calibrate` prints."""
    lines = [
        f"synth-{like} at profile {profile}, unimodal, seeds {','.join(map(str, seeds))} "
        f"(target: {'thesis table 6.2, standard, Adam' if like in TARGETS else 'none published (ours)'}; "
        f"tolerance +-{TOLERANCE:g} points)",
        f"{'modality':<8} {'target':>7} {'achieved':>15} {'delta':>7} {'ceiling':>8}  ok   {'s/run':>5}  per seed",
    ]
    for row in rows:
        seeds_text = " ".join(f"{a:.1f}" for a in row.accuracies)
        lines.append(
            f"{row.modality:<8} {row.target:>7.2f} {row.mean:>7.2f} +- {row.std:>4.2f} {row.delta:>+7.2f} "
            f"{row.ceiling:>8.1f}  {_verdict(row):<4} {row.seconds:>5.1f}  {seeds_text}"
        )
    return "\n".join(lines)


def _verdict(row: CalibrationRow) -> str:
    if not np.isfinite(row.target):
        return "n/a"
    return "yes" if row.within else "NO"


# -- `bench data calibrate` (here, above the trainer, not in bench/data: it trains models) -------------

def calibrate_command(
    like: str = typer.Option(..., "--like", help="mosi, mosei, sims or simsv2."),
    profile: str = typer.Option("quick", "--profile", help="smoke, quick or full."),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Comma-separated run seeds."),
    modalities: str = typer.Option("text,audio,vision", "--modalities", help="Which unimodal models to train."),
    workers: int = typer.Option(1, "--workers", help="Parallel worker processes (one CPU thread each)."),
    knob: list[str] = typer.Option([], "--knob",
                                   help="Try other knobs: MODALITY=SIGNAL,LABEL_NOISE (repeatable)."),
) -> None:
    """Train unimodal models on the surrogate and print achieved vs thesis accuracy per modality."""

    family = _parse_like(like)
    if profile not in synth.PROFILE_NAMES:
        raise DataError(f"unknown profile {profile!r}; choose from {', '.join(synth.PROFILE_NAMES)}")
    seed_list = _parse_seeds(seeds)
    mods = canonical_modalities(modalities)
    knobs = _parse_knobs(knob)
    rows = run_calibration(family, profile, seed_list, mods, workers=workers, knobs=knobs,
                           progress=lambda line: typer.echo(line, err=True))
    typer.echo(format_table(family, profile, rows, seed_list))


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise DataError(f"--seeds must be comma-separated integers, got {text!r}") from err
    if not seeds:
        raise DataError("--seeds is empty")
    return seeds


def _parse_knobs(items: list[str]) -> dict[str, tuple[float, float]]:
    knobs = {}
    for item in items:
        try:
            modality, values = item.split("=")
            signal, noise = (float(v) for v in values.split(","))
        except ValueError as err:
            raise DataError(f"--knob must look like text=6,1.9, got {item!r}") from err
        if modality not in synth.MODALITY_ORDER:
            raise DataError(f"--knob names unknown modality {modality!r}")
        knobs[modality] = (signal, noise)
    return knobs


def register(app: typer.Typer) -> None:
    """Add `calibrate` to the `bench data` sub-app."""

    data_app.command("calibrate")(calibrate_command)
