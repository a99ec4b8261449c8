"""`bench data ...`: synth, check, inspect (`calibrate` trains models: bench.calibrate adds it here).
Errors are raised (DataError); bench.cli reports them."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import typer

from bench.data import cache, packaged, synth, twins
from bench.data.loader import load_dataset, load_file, published_match
from bench.data.mmsa import check
from bench.data.registry import DATASETS, dataset_names, spec_file_beside, spec_for, write_spec_file
from bench.data.surrogates import SURROGATE_NAMES, SURROGATES
from bench.data.types import DataError

data_app = typer.Typer(name="data", help="Data: make the surrogate, check and inspect MMSA files, calibrate.",
                       no_args_is_help=True)


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
    """The registered datasets: the generated surrogates (SYNTHETIC), then the real ones and their files."""
    for spec in sorted(DATASETS.values(), key=lambda s: not s.synthetic):
        labels = spec.labels
        rules = "/".join(labels.rules)
        scores = f"scores {list(labels.score_range)}" if labels.score_range is not None else "given classes"
        kind = "SYNTHETIC" if spec.synthetic else "real     "
        where = "" if spec.synthetic else "  " + ", ".join(spec.files.values()) + " under $BENCH_DATA_DIR"
        source = packaged.source_for(spec.name)
        if source is not None:
            where = f"  from the installed {source.package} package ({packaged.INSTALL_HINT})"
        typer.echo(f"{spec.name:<22} {kind}  {spec.display}; {scores}, rules {rules}{where}")


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
    declared = spec_file_beside(out)
    write_spec_file(declared, name=out.stem, like=params.like,
                    display=f"{params.name} written by bench data synth (profile {profile}, seed {seed})")
    typer.echo(f"wrote {declared}: declares the file like = \"{params.like}\" (its labels, rules and sizes)")


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

    spec = spec_for(str(path))  # an undeclared file: one line naming the spec to write
    typer.echo(f"dataset spec: {spec.name} ({spec.display}), modalities {', '.join(spec.modalities)}")
    report = check(path, spec)
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
                                   help="One of the dataset spec's rules (MOSEI: binned or round; MOSI: sign; "
                                        "CH-SIMS: sims3 or sims5); default: its first."),
) -> None:
    """Print splits, shapes, length statistics, label histogram, SHA-256 and the published-file check."""

    if path in dataset_names():
        dataset = load_dataset(path, profile, label_rule=label_rule)
    else:
        dataset = load_file(Path(path), "full", num_classes=num_classes, label_rule=label_rule)
    rule = "the file's classification_labels" if dataset.label_rule == "given" else f"rule {dataset.label_rule}"
    typer.echo(f"dataset {dataset.name}: {dataset.num_classes} classes ({rule}), modalities "
               f"{', '.join(dataset.modalities)}" + ("  [SYNTHETIC]" if dataset.synthetic else ""))
    if dataset.spec is not None:
        spec = dataset.spec
        scores = f", scores in {list(spec.labels.score_range)}" if spec.labels.score_range is not None else ""
        typer.echo(f"spec {spec.name} ({spec.display}){scores}, rules {', '.join(spec.labels.rules)}, "
                   f"metric set {spec.metric_set}")
    typer.echo(f"source {dataset.source}")
    if dataset.synthetic:
        typer.echo(f"generator fingerprint {dataset.fingerprint}")
    else:
        sha256 = cache.known_sha256(Path(dataset.source))
        typer.echo(f"SHA-256 {sha256}")
        if dataset.fingerprint != sha256:
            typer.echo(f"data fingerprint {dataset.fingerprint} (the file and its spec file's content)")
        typer.echo(published_match(sha256) or "does not match a published MMSA file")
    for line in describe(dataset):
        typer.echo(line)


def describe(dataset) -> list[str]:
    """Per split: size, shapes, true-length min/median/max per modality, label histogram (the spec's names)."""
    if dataset.spec is not None:
        names = dataset.spec.labels.names_for(dataset.label_rule, dataset.num_classes)
    else:
        names = tuple(str(k) for k in range(dataset.num_classes))
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
        for m, values in part.modality_scores.items():
            values = np.asarray(values)
            lines.append(f"  {m} scores min/mean/max {values.min():.2f}/{values.mean():.2f}/{values.max():.2f}")
    lines.append(f"dev split: {dataset.dev_index.shape[0]} rows of train (fixed split seed)")
    lines.extend(f"note: {note}" for note in dataset.notes)
    return lines
