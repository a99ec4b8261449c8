"""`load_dataset`: a name or a path -> a `Dataset` read from the memory-mapped cache, by its declared spec.

Every dataset has a `DatasetSpec` (bench.data.registry.spec_for): a surrogate name is generated
(bench.data.synth, its twins bench.data.twins); a registered name with files ("mosi", "mosei", "sims")
is the MMSA file under $BENCH_DATA_DIR (or `data_dir`) at the spec's relative path; any other string is
the path of an MMSA-schema pickle that a spec must declare (a registered file path or SHA-256, or a
`<stem>.spec.toml` beside it), else a DataError in one line.

From the spec: the modalities read, the score range checked, the per-modality scores (CH-SIMS), the
label rules (`label_rule` picks one, None = the first), the class names, the dev-split size, and the
profile subset sizes: `full` uses every sample of a file; `quick` and `smoke` take a fixed stratified
subset of each split (split seed fixed, so every run sees the same rows) of the spec's profile sizes.
A spec of label kind "classes" uses the file's `classification_labels` (K from the spec's class names,
else `num_classes`, else max + 1).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import cache, labels, mmsa, packaged, splits, synth, twins
from bench.data.registry import (
    DATASETS,
    declared_file,
    from_spec_file,
    names_text,
    published_description,
    spec_for,
)
from bench.data.safe_pickle import check_readable_file
from bench.data.spec import GIVEN, DatasetSpec
from bench.data.types import DataError, Dataset, SplitArrays

PROFILES = ("smoke", "quick", "full")
SCORE_PREFIX = "modality_score_"  # cache array name of a per-modality score: modality_score_<m>


def clear_memory_cache() -> None:
    """Forget the datasets kept in this process (the on-disk cache stays)."""
    _load_file_cached.cache_clear()
    _load_packaged_cached.cache_clear()
    load_synth.cache_clear()


def published_match(sha256: str) -> str | None:
    """'matches the published MMSA file (MOSI unaligned_50.pkl)' when the hash is a published one."""
    known = published_description(sha256)
    return f"matches the published MMSA file ({known})" if known else None


def load_dataset(name: str, profile: str = "quick", data_dir: Path | None = None,
                 label_rule: str | None = None) -> Dataset:
    """The dataset `name` (a registered name or a declared file's path) at `profile`."""
    if profile not in PROFILES:
        raise DataError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    key = str(name).strip()
    spec = DATASETS.get(key)
    if spec is not None and spec.synthetic:
        return load_synth(key, profile, label_rule=label_rule)
    source = packaged.source_for(key)
    if spec is not None and source is not None:
        return load_packaged(source, spec, profile, label_rule)
    declared = declared_file(key)  # the name of a loaded spec file: the data file it declares
    if declared is not None:
        return load_file(declared, profile, name=key, label_rule=label_rule)
    if spec is not None and spec.files:
        return load_file(real_file_path(key, data_dir), profile, name=key, label_rule=label_rule, spec=spec)
    return load_file(Path(key).expanduser(), profile, label_rule=label_rule)


def data_fingerprint(name: str, profile: str = "quick", data_dir: Path | None = None) -> str:
    """The fingerprint `load_dataset(name, profile)` will carry, without loading the arrays.

    Surrogate: the hash of the generator's parameters; a file: its SHA-256 (hashed once, then remembered).
    A path must be declared (spec_for), as for loading.
    """
    key = str(name).strip()
    spec = DATASETS.get(key)
    if spec is not None and spec.synthetic:
        return twins.surrogate_params(key, profile).fingerprint
    source = packaged.source_for(key)
    if spec is not None and source is not None:
        return source.digest(source.folder())
    declared = declared_file(key)
    if declared is not None:
        path = declared
    elif spec is not None and spec.files:
        path = real_file_path(key, data_dir)
    else:
        path = Path(key).expanduser()
        spec = spec_for(str(path))  # an undeclared file is refused here too, in one line
    if not path.exists():
        raise DataError(f"{path}: no such file (dataset names: {names_text()}, or a path)")
    check_readable_file(path)
    return file_fingerprint(cache.known_sha256(path), spec)


def file_fingerprint(digest: str, spec: DatasetSpec | None) -> str:
    """A data file's fingerprint: its SHA-256; where a spec file declares rules of its own (sizes, label
    rules, range, metric set, modalities: not only `like = "mosi"`), also that spec's content, so an edited
    spec moves the run ids and never reuses a run of the old one."""
    if spec is None or not from_spec_file(spec):
        return digest  # built-in specs: the file's hash alone, as always (the ids of real MOSI/MOSEI runs)
    parent = DATASETS.get(spec.like)
    if parent is not None and parent.content_digest() == spec.content_digest():
        return digest  # a plain `like = ...`: the parent's rules, which the file's hash has always stood for
    return hashlib.sha256(f"{digest}|{spec.content_digest()}".encode()).hexdigest()


def real_file_path(name: str, data_dir: Path | None = None) -> Path:
    """Where the MMSA file of the registered dataset `name` must be; DataError saying how to get it."""
    spec = DATASETS[name]
    root = data_dir if data_dir is not None else os.environ.get("BENCH_DATA_DIR")
    relative = Path(spec.files.get("unaligned") or next(iter(spec.files.values())))
    stand_in = next((s.name for s in DATASETS.values() if s.synthetic and s.like == name), "")
    surrogate = f" '{stand_in}' is the built-in surrogate." if stand_in else ""
    if root is None:
        raise DataError(
            f"dataset '{name}' needs the MMSA file {relative}: set BENCH_DATA_DIR (or pass data_dir) to the "
            f"folder that holds {relative.parts[0]}/, or give the file's path as the dataset; the files are "
            f"licensed downloads (MMSA / CMU-MultimodalSDK).{surrogate}"
        )
    path = Path(root).expanduser() / relative
    if not path.is_file():
        raise DataError(
            f"dataset '{name}': {path} not found. Put the MMSA file there (BENCH_DATA_DIR={root}), or give "
            f"the file's path as the dataset;{surrogate or ' no surrogate imitates it.'}"
        )
    return path


# -- real / declared files --------------------------------------------------------------------------


def load_file(path: Path, profile: str = "full", name: str | None = None, num_classes: int | None = None,
              label_rule: str | None = None, spec: DatasetSpec | None = None) -> Dataset:
    """An MMSA-schema pickle read by its spec (default: the one that declares the file), converted to the
    cache on first use."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file (dataset names: {names_text()}, or a path)")
    check_readable_file(path)
    if spec is None:
        spec = spec_for(str(path))
    stat = path.stat()
    return _load_file_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, profile, spec,
                             name or path.stem, num_classes, label_rule)


@functools.lru_cache(maxsize=8)
def _load_file_cached(resolved: str, size: int, mtime_ns: int, profile: str, spec: DatasetSpec, name: str,
                      num_classes: int | None, label_rule: str | None = None) -> Dataset:
    path = Path(resolved)
    digest = cache.known_sha256(path)
    directory = convert_file(path, digest, spec)
    return _dataset_from_cache(directory, str(path), spec, name, profile, num_classes, label_rule,
                               file_fingerprint(digest, spec))


def _dataset_from_cache(directory: Path, source: str, spec: DatasetSpec, name: str, profile: str,
                        num_classes: int | None, label_rule: str | None, fingerprint: str) -> Dataset:
    """A converted cache entry as a Dataset: labels by the spec's rule, the profile's subset, the dev split."""
    meta = cache.read_meta(directory)
    full = {split: cache.read_arrays(directory, split) for split in mmsa.RAW_SPLITS}
    labelled, k, label_note, rule = label_splits(full, source, spec, num_classes, label_rule)
    parts = {split: _split_arrays(full[split], labelled[split], meta["modalities"]) for split in mmsa.RAW_SPLITS}
    notes = list(meta.get("notes", [])) + [label_note]
    if profile != "full":
        parts, subset_note = _profile_subset(parts, spec, profile)
        notes.append(subset_note)
    return Dataset(
        name=name, num_classes=k, modalities=tuple(meta["modalities"]), train=parts["train"],
        valid=parts["valid"], test=parts["test"],
        dev_index=splits.dev_index(parts["train"].labels, spec.dev_size), fingerprint=fingerprint,
        synthetic=False, source=source, notes=tuple(notes), label_rule=rule, spec=spec,
    )


def load_packaged(source: packaged.PackagedSource, spec: DatasetSpec, profile: str = "full",
                  label_rule: str | None = None) -> Dataset:
    """A dataset read from an installed package (bench.data.packaged), converted to the cache on first use;
    DataError in one line when the package is not installed."""
    folder = source.folder()
    return _load_packaged_cached(source, str(folder), spec, profile, label_rule)


@functools.lru_cache(maxsize=4)
def _load_packaged_cached(source: packaged.PackagedSource, folder: str, spec: DatasetSpec, profile: str,
                          label_rule: str | None) -> Dataset:
    digest = source.digest(Path(folder))
    directory = _convert(cache_key(digest, spec), lambda: source.build(Path(folder)), source.source(Path(folder)),
                         digest, spec)
    return _dataset_from_cache(directory, source.source(Path(folder)), spec, spec.name, profile, None, label_rule,
                               digest)


def cache_key(digest: str, spec: DatasetSpec | None) -> str:
    """The cache entry of a file: its SHA-256 for MOSI's schema (as always), plus the schema's hash else."""
    schema = mmsa.Schema.of(spec)
    if schema == mmsa.Schema():
        return digest
    text = json.dumps([list(schema.modalities), list(schema.score_range), [list(p) for p in schema.modality_labels]])
    return f"{digest}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def convert_file(path: Path, digest: str, spec: DatasetSpec | None = None) -> Path:
    """The cache directory of `path` (sha256 `digest`) read by `spec`'s schema, converting the pickle first
    if needed."""
    return _convert(cache_key(digest, spec), lambda: mmsa.read_raw(path), str(path), digest, spec)


def _convert(key: str, read: Any, source: str, digest: str, spec: DatasetSpec | None) -> Path:
    """The cache entry `key` of an MMSA-schema record (`read()` gives it; `source` names it in messages),
    validated and converted by `spec`'s schema if not there yet."""
    schema = mmsa.Schema.of(spec)
    directory = cache.entry_dir("mmsa", key)
    if cache.is_complete(directory):
        return directory

    def fill(save: cache.ArrayWriter, _open: Any) -> dict[str, Any]:
        raw = read()
        findings = mmsa.Findings(strict=True)
        modalities = mmsa.split_modalities(source, raw, schema)
        sizes = {}
        for split, clean in mmsa.iter_clean_splits(source, raw, findings, schema):
            sizes[split] = clean.size
            _save_clean(save, split, clean)
            del clean  # frees this split's arrays before the next split is validated
        return {"modalities": list(modalities), "notes": findings.notes, "sizes": sizes, "source": source,
                "sha256": digest, "synthetic": False}

    cache.write_entry(directory, fill)
    return directory


def _save_clean(save: cache.ArrayWriter, split: str, clean: mmsa.CleanSplit) -> None:
    """Write one split's arrays, dropping each from memory once it is on disk."""
    for modality in list(clean.features):
        save(split, modality, clean.features.pop(modality))
        save(split, f"{modality}_lengths", clean.lengths.pop(modality))
    if clean.regression is not None:
        save(split, "regression", clean.regression)
    if clean.classification is not None:
        save(split, "classification", clean.classification)
    for modality, scores in clean.modality_scores.items():
        save(split, f"{SCORE_PREFIX}{modality}", scores)
    save(split, "ids", np.asarray(clean.ids).astype(str))


def label_splits(arrays: dict[str, dict[str, np.ndarray]], path: Path | str, spec: DatasetSpec,
                 num_classes: int | None,
                 label_rule: str | None = None) -> tuple[dict[str, np.ndarray], int, str, str]:
    """Class labels per split, the number of classes, a note saying which rule made them, and the rule."""
    rule = label_rule or spec.labels.default_rule
    spec.check_rule(rule)
    if spec.labels.kind == "classes":
        return _given_labels(arrays, path, spec, num_classes)
    if not all("regression" in arrays[s] for s in mmsa.RAW_SPLITS):
        raise DataError(f"{path}: no 'regression_labels' in every split: cannot make class labels (the "
                        f"{spec.name} spec makes them from scores; a file with only classification_labels needs "
                        "a spec of kind \"classes\")")
    k = spec.labels.num_classes(rule) or labels.RULE_CLASSES[rule]
    if num_classes is not None and num_classes != k:
        raise DataError(f"{path}: the {spec.name} rule {rule!r} gives {k} classes, not the {num_classes} asked "
                        "for (a different number needs classification_labels and a spec of kind \"classes\")")
    out = {s: labels.classes_by_rule(arrays[s]["regression"], rule) for s in mmsa.RAW_SPLITS}
    return out, k, f"labels: {spec.display} rule '{rule}' on regression_labels ({k} classes)", rule


def _given_labels(arrays: dict[str, dict[str, np.ndarray]], path: Path | str, spec: DatasetSpec,
                  num_classes: int | None) -> tuple[dict[str, np.ndarray], int, str, str]:
    """The file's own classification_labels (a spec of kind "classes"): K from the spec, the caller or max + 1."""
    if not all("classification" in arrays[s] for s in mmsa.RAW_SPLITS):
        raise DataError(f"{path}: no 'classification_labels' in every split: cannot make class labels (the "
                        f"{spec.name} spec's labels are the file's classes)")
    # Checked (finite whole numbers >= 0) before the class count is taken from their maximum.
    given = {s: labels.given_classes(arrays[s]["classification"], None, f"{path}: split '{s}'")[0]
             for s in mmsa.RAW_SPLITS}
    top = max(int(np.max(given[s], initial=0)) for s in mmsa.RAW_SPLITS)
    declared = spec.labels.num_classes(GIVEN)
    k = declared or (num_classes if num_classes is not None else top + 1)
    out = {s: labels.given_classes(given[s], k, f"{path}: split '{s}'")[0] for s in mmsa.RAW_SPLITS}
    return out, k, f"labels: the file's classification_labels ({k} classes)", GIVEN


def _split_arrays(arrays: dict[str, np.ndarray], classes: np.ndarray, modalities: list[str]) -> SplitArrays:
    return SplitArrays(
        features={m: arrays[m] for m in modalities},
        lengths={m: arrays[f"{m}_lengths"] for m in modalities},
        labels=_read_only(classes),
        regression=arrays.get("regression"),
        ids=arrays["ids"],
        modality_scores={m: arrays[f"{SCORE_PREFIX}{m}"] for m in modalities if f"{SCORE_PREFIX}{m}" in arrays},
    )


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def _profile_subset(parts: dict[str, SplitArrays], spec: DatasetSpec,
                    profile: str) -> tuple[dict[str, SplitArrays], str]:
    """Fixed stratified subsets of each split at the spec's profile sizes (quick / smoke on real data)."""
    sizes = spec.profile_sizes[profile]
    out = {}
    for offset, (split, size) in enumerate(zip(mmsa.RAW_SPLITS, sizes, strict=True)):
        rows = splits.stratified_sample(parts[split].labels, size, seed=splits.SPLIT_SEED + offset)
        out[split] = _frozen(parts[split].subset(rows))
    got = "/".join(str(out[s].size) for s in mmsa.RAW_SPLITS)
    return out, f"profile {profile}: fixed stratified subset {got} (train/valid/test)"


def _frozen(split: SplitArrays) -> SplitArrays:
    """The same split with every array read-only (datasets are shared through the in-process cache)."""
    for array in [*split.features.values(), *split.lengths.values(), split.labels, split.ids,
                  *([] if split.regression is None else [split.regression]), *split.modality_scores.values()]:
        array.setflags(write=False)
    return split


# -- the surrogate ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def load_synth(name: str, profile: str = "quick", seed: int = synth.DATA_SEED,
               label_rule: str | None = None) -> Dataset:
    """The surrogate `name` ("synth-mosi", a twin, or a bare like "mosi") at `profile`: generated once
    into the cache, then memory-mapped."""
    params = twins.surrogate_params(name if name.startswith("synth-") else f"synth-{name}", profile, seed)
    directory = cache.entry_dir("synth", params.fingerprint)
    try:
        if not cache.is_complete(directory):
            cache.write_entry(directory, functools.partial(_fill_synth, params))
    except OSError as err:  # read-only or full cache: generate in memory instead
        return synth_dataset(params, notes=(f"cache not writable ({err}); generated in memory",),
                             label_rule=label_rule)
    meta = cache.read_meta(directory)
    arrays = {split: cache.read_arrays(directory, split) for split in mmsa.RAW_SPLITS}
    return _synth_from_arrays(params, arrays, tuple(meta.get("notes", [])), label_rule)


def _fill_synth(params: synth.SynthParams, save: cache.ArrayWriter, open_array: Any) -> dict[str, Any]:
    """Stream the generator into the cache entry: features chunk by chunk into .npy memory maps."""
    for plan in synth.plan_splits(params):
        for spec in params.modalities:
            out = open_array(plan.name, spec.name, (plan.size, spec.steps, spec.dim), np.float32)
            for start, chunk in synth.feature_chunks(params, plan, spec.name):
                out[start:start + chunk.shape[0]] = chunk
            out.flush()
            del out
            save(plan.name, f"{spec.name}_lengths", plan.lengths[spec.name])
        save(plan.name, "regression", plan.scores)
        for modality, scores in plan.modality_scores.items():
            save(plan.name, f"{SCORE_PREFIX}{modality}", scores)
        save(plan.name, "ids", plan.ids)
    return {"modalities": [m.name for m in params.modalities], "notes": [], "source": params.source,
            "params": params.to_json(), "synthetic": True}


def synth_dataset(params: synth.SynthParams, notes: tuple[str, ...] = (), label_rule: str | None = None) -> Dataset:
    """The surrogate built in memory (no cache): for calibration experiments and fallbacks."""
    arrays = {}
    for plan in synth.plan_splits(params):
        record = {m.name: synth.assemble(params, plan, m.name) for m in params.modalities}
        record.update({f"{m}_lengths": plan.lengths[m] for m in plan.lengths})
        record.update({"regression": plan.scores, "ids": plan.ids})
        record.update({f"{SCORE_PREFIX}{m}": v for m, v in plan.modality_scores.items()})
        arrays[plan.name] = record
    dataset = _synth_from_arrays(params, arrays, notes, label_rule)
    for split in (dataset.train, dataset.valid, dataset.test):
        _frozen(split)
    return dataset


def _synth_from_arrays(params: synth.SynthParams, arrays: dict[str, dict[str, np.ndarray]],
                       notes: tuple[str, ...], label_rule: str | None = None) -> Dataset:
    modalities = [m.name for m in params.modalities]
    spec = DATASETS.get(params.name) or DATASETS[f"synth-{params.like}"]
    rule = label_rule or spec.labels.default_rule
    spec.check_rule(rule)
    parts = {
        split: _split_arrays(arrays[split], labels.classes_by_rule(arrays[split]["regression"], rule), modalities)
        for split in mmsa.RAW_SPLITS
    }
    return Dataset(
        name=params.name, num_classes=params.num_classes, modalities=tuple(modalities),
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        dev_index=splits.dev_index(parts["train"].labels, spec.dev_size), fingerprint=params.fingerprint,
        synthetic=True, source=params.source, notes=notes, label_rule=rule, spec=spec,
    )


@dataclass(frozen=True)
class FileSummary:
    """What `bench data inspect` prints about a file."""

    path: Path
    sha256: str
    dataset: Dataset


def inspect_file(path: Path, num_classes: int | None = None) -> FileSummary:
    """Load (converting if needed) a declared file at full size, for `bench data inspect`."""
    dataset = load_file(Path(path), "full", num_classes=num_classes)
    return FileSummary(Path(path), dataset.fingerprint, dataset)
