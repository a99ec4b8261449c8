"""`bench data ...`: synth, check, inspect (`calibrate` trains models: bench.calibrate adds it here).
Errors are raised (DataError); bench.cli reports them."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import typer

from bench.data import synth, twins
from bench.data.surrogates import REAL_NAMES, SURROGATE_NAMES, SURROGATES
from bench.data.types import DataError

data_app = typer.Typer(name="data", help="Data: make the surrogate, check and inspect MMSA files, calibrate.",
                       no_args_is_help=True)

DATASET_NAMES = (*SURROGATE_NAMES, *REAL_NAMES)


def register(app: typer.Typer) -> None:
    """Add the `data` sub-app to the bench CLI."""
    app.add_typer(data_app, name="data")


def _parse_like(like: str) -> str:
    """'mosi' or 'mosei' (the base surrogate's like) of a --like value, for calibration."""
    value = like.strip().lower().removeprefix("synth-")
    if value not in synth.LIKES:
        raise DataError(f"--like must be one of {', '.join(synth.LIKES)}, got {like!r}")
    return value


def _parse_surrogate(like: str) -> str:
    """The surrogate name of a --like value: 'mosi', 'mosi-aligned' or 'synth-mosi-aligned' -> 'synth-...'."""
    value = "synth-" + like.strip().lower().removeprefix("synth-")
    if value not in SURROGATES:
        choices = ", ".join(n.removeprefix("synth-") for n in SURROGATE_NAMES)
        raise DataError(f"--like must be one of {choices}, got {like!r}")
    return value


@data_app.command("list")
def list_command() -> None:
    """The dataset names: every built-in surrogate (SYNTHETIC) and the real MMSA datasets."""
    for name, entry in SURROGATES.items():
        typer.echo(f"{name:<22} SYNTHETIC  {entry.like} family  {entry.description}")
    for name in REAL_NAMES:
        typer.echo(f"{name:<22} real       {name} family  MMSA unaligned_50.pkl under $BENCH_DATA_DIR")


@data_app.command("synth")
def synth_command(
    like: str = typer.Option(..., "--like", help="mosi, mosei or a twin (mosi-aligned, mosei-shift, ...)."),
    profile: str = typer.Option("quick", "--profile", help="smoke, quick or full (real split sizes)."),
    seed: int = typer.Option(synth.DATA_SEED, "--seed", help="Generator seed."),
    out: Path = typer.Option(..., "--out", help="Where to write the MMSA-schema pickle."),
) -> None:
    """Write a synthetic MOSI/MOSEI-like dataset as an MMSA-schema pickle."""
    params = twins.surrogate_params(_parse_surrogate(like), profile, seed)
    if out.is_dir():
        raise DataError(f"{out}: is a directory; --out must be a file path")
    data = synth.generate(params)
    _write_pickle(out, data)
    sizes = "/".join(str(data[s]["regression_labels"].shape[0]) for s in synth.RAW_SPLITS)
    typer.echo(f"wrote {out}: SYNTHETIC {params.name}, profile {profile}, seed {seed}, "
               f"train/valid/test {sizes}")
    typer.echo(f"generator fingerprint {params.fingerprint}")
    if params.like == "mosei" and "mosei" not in str(out).lower():
        typer.echo("note: loaded by path, a file whose path lacks 'mosei' gets the 3-class MOSI rule; "
                   "name it *mosei* to get the 7 MOSEI classes")


def _write_pickle(out: Path, data: dict) -> None:
    """Pickle `data` to `out` atomically (temp file in the same folder, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            pickle.dump(data, stream, protocol=4)
        os.replace(temp, out)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


@data_app.command("check")
def check_command(path: Path = typer.Argument(..., help="An MMSA-schema pickle.")) -> None:
    """Validate a file: exit 0 with a summary, or exit 2 naming the first problem."""
    from bench.data.mmsa import check

    report = check(path)
    for line in report.summary:
        typer.echo(line)
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.problems:
        for problem in report.problems[1:]:  # the first one is the error line bench.cli prints
            typer.echo(f"problem: {problem}")
        more = len(report.problems) - 1
        raise DataError(report.problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))
    typer.echo(f"OK: {path} passes validation")


@data_app.command("inspect")
def inspect_command(
    path: str = typer.Argument(..., help="An MMSA-schema pickle, or a name of `bench data list`."),
    profile: str = typer.Option("full", "--profile", help="Profile for dataset names (files: always full)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classes of a file's classification_labels."),
    label_rule: str = typer.Option(None, "--label-rule",
                                   help="MOSEI-style 7 classes: binned (default) or round; MOSI: sign."),
) -> None:
    """Print splits, shapes, length statistics, label histogram, SHA-256 and the published-file check."""
    from bench.data.loader import load_dataset, load_file, published_match

    if path in DATASET_NAMES:
        dataset = load_dataset(path, profile, label_rule=label_rule)
    else:
        dataset = load_file(Path(path), "full", num_classes=num_classes, label_rule=label_rule)
    rule = "the file's classification_labels" if dataset.label_rule == "given" else f"rule {dataset.label_rule}"
    typer.echo(f"dataset {dataset.name}: {dataset.num_classes} classes ({rule}), modalities "
               f"{', '.join(dataset.modalities)}" + ("  [SYNTHETIC]" if dataset.synthetic else ""))
    typer.echo(f"source {dataset.source}")
    if dataset.synthetic:
        typer.echo(f"generator fingerprint {dataset.fingerprint}")
    else:
        typer.echo(f"SHA-256 {dataset.fingerprint}")
        typer.echo(published_match(dataset.fingerprint) or "does not match a published MMSA file")
    for line in describe(dataset):
        typer.echo(line)


def describe(dataset) -> list[str]:
    """Per split: size, shapes, true-length min/median/max per modality, label histogram."""
    from bench.data.labels import class_names

    names = class_names(dataset.num_classes, dataset.label_rule)
    lines = []
    for split in ("train", "valid", "test"):
        part = dataset.split(split)
        lines.append(f"{split}: {part.size} samples")
        for m in dataset.modalities:
            lengths = np.asarray(part.lengths[m])
            lines.append(f"  {m:<6} shape {tuple(part.features[m].shape)}  length min/median/max "
                         f"{lengths.min()}/{np.median(lengths):g}/{lengths.max()}")
        counts = np.bincount(np.asarray(part.labels), minlength=dataset.num_classes)
        lines.append("  labels " + "  ".join(f"{n}:{c}" for n, c in zip(names, counts, strict=True)))
        if part.regression is not None:
            scores = np.asarray(part.regression)
            lines.append(f"  regression min/mean/max {scores.min():.2f}/{scores.mean():.2f}/{scores.max():.2f}, "
                         f"exact zeros {100 * np.mean(scores == 0):.1f} %")
    lines.append(f"dev split: {dataset.dev_index.shape[0]} rows of train (fixed split seed)")
    lines.extend(f"note: {note}" for note in dataset.notes)
    return lines
