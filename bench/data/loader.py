"""`load_dataset`: a name or a path -> a `Dataset` read from the memory-mapped cache.

Names: the built-in surrogates of bench.data.surrogates ("synth-mosi" / "synth-mosei", bench.data.synth,
and their aligned / shifted twins, bench.data.twins); "mosi" / "mosei"
are the MMSA files under $BENCH_DATA_DIR (or `data_dir`): MOSI/Processed/unaligned_50.pkl and
MOSEI/Processed/unaligned_50.pkl; any other string is the path of an MMSA-schema pickle.

Profiles on real files: `full` uses every sample; `quick` and `smoke` take a fixed stratified subset
of each split (split seed fixed, so every run sees the same rows) of the same sizes as the surrogate
at that profile (synth.SIZES: MOSI family 500/150/300 and 48/24/24, MOSEI 800/200/400 and 64/32/32).

Labels: the MOSI / MOSEI rules (bench.data.labels) for the named datasets, for the surrogate and for a
file whose SHA-256 is a published MMSA one; any other file uses its `classification_labels` when it
has them (K = max + 1, or `num_classes`), else the family rule by path ("mosei" in the path -> 7).
`label_rule` picks among a family's rules (MOSEI: "binned", the default, or "round"); None = default.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import cache, labels, mmsa, splits, synth, twins
from bench.data.safe_pickle import check_readable_file
from bench.data.surrogates import is_surrogate, names_text
from bench.data.types import DataError, Dataset, SplitArrays

# Published SHA-256 of the MMSA files (design.md, Data): checked and reported, never enforced.
PUBLISHED_SHA256 = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": ("mosi", "MOSI unaligned_50.pkl"),
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": ("mosei", "MOSEI unaligned_50.pkl"),
}
REAL_FILES = {"mosi": Path("MOSI/Processed/unaligned_50.pkl"), "mosei": Path("MOSEI/Processed/unaligned_50.pkl")}
PROFILES = ("smoke", "quick", "full")


def clear_memory_cache() -> None:
    """Forget the datasets kept in this process (the on-disk cache stays)."""
    _load_file_cached.cache_clear()
    load_synth.cache_clear()


def published_match(sha256: str) -> str | None:
    """'matches the published MMSA file (MOSI unaligned_50.pkl)' when the hash is a published one."""
    known = PUBLISHED_SHA256.get(sha256)
    return f"matches the published MMSA file ({known[1]})" if known else None


def load_dataset(name: str, profile: str = "quick", data_dir: Path | None = None,
                 label_rule: str | None = None) -> Dataset:
    """The dataset `name` (a surrogate name, "mosi", "mosei" or a path) at `profile`."""
    if profile not in PROFILES:
        raise DataError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    key = str(name).strip()
    if is_surrogate(key):
        return load_synth(key, profile, label_rule=label_rule)
    if key in ("mosi", "mosei"):
        return load_file(real_file_path(key, data_dir), profile, family=key, name=key, label_rule=label_rule)
    return load_file(Path(key).expanduser(), profile, label_rule=label_rule)


def data_fingerprint(name: str, profile: str = "quick", data_dir: Path | None = None) -> str:
    """The fingerprint `load_dataset(name, profile)` will carry, without loading the arrays.

    Surrogate: the hash of the generator's parameters; a file: its SHA-256 (hashed once, then remembered).
    """
    key = str(name).strip()
    if is_surrogate(key):
        return twins.surrogate_params(key, profile).fingerprint
    path = real_file_path(key, data_dir) if key in ("mosi", "mosei") else Path(key).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file (dataset names: {names_text()}, or a path)")
    check_readable_file(path)
    return cache.known_sha256(path)


def real_file_path(family: str, data_dir: Path | None = None) -> Path:
    """Where the real MMSA file of `family` must be; DataError saying how to get it when it is not."""
    root = data_dir if data_dir is not None else os.environ.get("BENCH_DATA_DIR")
    relative = REAL_FILES[family]
    if root is None:
        raise DataError(
            f"dataset '{family}' needs the MMSA file {relative}: set BENCH_DATA_DIR (or pass data_dir) to the "
            f"folder that holds {relative.parts[0]}/, or give the file's path as the dataset; the files are "
            f"licensed downloads (MMSA / CMU-MultimodalSDK). 'synth-{family}' is the built-in surrogate."
        )
    path = Path(root).expanduser() / relative
    if not path.is_file():
        raise DataError(
            f"dataset '{family}': {path} not found. Put the MMSA file there (BENCH_DATA_DIR={root}), or give "
            f"the file's path as the dataset; 'synth-{family}' is the built-in surrogate."
        )
    return path


# -- real / custom files ----------------------------------------------------------------------------


def load_file(path: Path, profile: str = "full", family: str | None = None, name: str | None = None,
              num_classes: int | None = None, label_rule: str | None = None) -> Dataset:
    """An MMSA-schema pickle, converted to the cache on first use."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file (dataset names: {names_text()}, or a path)")
    check_readable_file(path)
    stat = path.stat()
    return _load_file_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns, profile, family,
                             name or path.stem, num_classes, label_rule)


@functools.lru_cache(maxsize=8)
def _load_file_cached(resolved: str, size: int, mtime_ns: int, profile: str, family: str | None, name: str,
                      num_classes: int | None, label_rule: str | None = None) -> Dataset:
    path = Path(resolved)
    digest = cache.known_sha256(path)
    directory = convert_file(path, digest)
    meta = cache.read_meta(directory)
    published = PUBLISHED_SHA256.get(digest)
    rule_family = family or (published[0] if published else None)
    full = {split: cache.read_arrays(directory, split) for split in mmsa.RAW_SPLITS}
    labelled, k, label_note, rule = label_splits(full, path, rule_family, num_classes, label_rule)
    data_family = rule_family or labels.family_for_path(path)
    parts = {split: _split_arrays(full[split], labelled[split], meta["modalities"]) for split in mmsa.RAW_SPLITS}
    notes = list(meta.get("notes", [])) + [label_note]
    if profile != "full":
        parts, subset_note = _profile_subset(parts, data_family, profile)
        notes.append(subset_note)
    return Dataset(
        name=name, num_classes=k, modalities=tuple(meta["modalities"]), train=parts["train"],
        valid=parts["valid"], test=parts["test"],
        dev_index=splits.dev_index(parts["train"].labels, data_family), fingerprint=digest, synthetic=False,
        source=str(path), notes=tuple(notes), label_rule=rule,
    )


def convert_file(path: Path, digest: str) -> Path:
    """The cache directory of `path` (sha256 `digest`), converting the pickle first if needed."""
    directory = cache.entry_dir("mmsa", digest)
    if cache.is_complete(directory):
        return directory

    def fill(save: cache.ArrayWriter, _open: Any) -> dict[str, Any]:
        raw = mmsa.read_raw(path)
        findings = mmsa.Findings(strict=True)
        modalities = mmsa.split_modalities(path, raw)
        sizes = {}
        for split, clean in mmsa.iter_clean_splits(path, raw, findings):
            sizes[split] = clean.size
            _save_clean(save, split, clean)
            del clean  # frees this split's arrays before the next split is validated
        return {"modalities": list(modalities), "notes": findings.notes, "sizes": sizes, "source": str(path),
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
    save(split, "ids", np.asarray(clean.ids).astype(str))


def label_splits(arrays: dict[str, dict[str, np.ndarray]], path: Path | str, family: str | None,
                 num_classes: int | None,
                 label_rule: str | None = None) -> tuple[dict[str, np.ndarray], int, str, str]:
    """Class labels per split, the number of classes, a note saying which rule made them, and the rule."""
    has_scores = all("regression" in arrays[s] for s in mmsa.RAW_SPLITS)
    has_given = all("classification" in arrays[s] for s in mmsa.RAW_SPLITS)
    if has_given and (family is None or not has_scores):
        # Checked (finite whole numbers >= 0) before the class count is taken from their maximum.
        given = {s: labels.given_classes(arrays[s]["classification"], None, f"{path}: split '{s}'")[0]
                 for s in mmsa.RAW_SPLITS}
        top = max(int(np.max(given[s], initial=0)) for s in mmsa.RAW_SPLITS)
        k = num_classes if num_classes is not None else top + 1
        out = {s: labels.given_classes(given[s], k, f"{path}: split '{s}'")[0] for s in mmsa.RAW_SPLITS}
        return out, k, f"labels: the file's classification_labels ({k} classes)", "given"
    if not has_scores:
        raise DataError(f"{path}: no 'regression_labels' in every split and no 'classification_labels' in "
                        "every split: cannot make class labels")
    rule = family or labels.family_for_path(path)
    k = labels.num_classes_for_family(rule)
    if num_classes is not None and num_classes != k:
        raise DataError(f"{path}: the {rule.upper()} rule gives {k} classes, not the {num_classes} asked for "
                        "(a different number needs classification_labels in the file)")
    chosen = label_rule or labels.default_rule(rule)
    labels.check_rule(rule, chosen)
    out = {s: labels.classes_for_family(arrays[s]["regression"], rule, chosen) for s in mmsa.RAW_SPLITS}
    return out, k, f"labels: {rule.upper()} rule '{chosen}' on regression_labels ({k} classes)", chosen


def _split_arrays(arrays: dict[str, np.ndarray], classes: np.ndarray, modalities: list[str]) -> SplitArrays:
    return SplitArrays(
        features={m: arrays[m] for m in modalities},
        lengths={m: arrays[f"{m}_lengths"] for m in modalities},
        labels=_read_only(classes),
        regression=arrays.get("regression"),
        ids=arrays["ids"],
    )


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def _profile_subset(parts: dict[str, SplitArrays], family: str, profile: str) -> tuple[dict[str, SplitArrays], str]:
    """Fixed stratified subsets of each split at the profile's sizes (quick / smoke on real data)."""
    sizes = synth.SIZES["mosei" if family == "mosei" else "mosi"][profile]
    out = {}
    for offset, (split, size) in enumerate(zip(mmsa.RAW_SPLITS, sizes, strict=True)):
        rows = splits.stratified_sample(parts[split].labels, size, seed=splits.SPLIT_SEED + offset)
        out[split] = _frozen(parts[split].subset(rows))
    got = "/".join(str(out[s].size) for s in mmsa.RAW_SPLITS)
    return out, f"profile {profile}: fixed stratified subset {got} (train/valid/test)"


def _frozen(split: SplitArrays) -> SplitArrays:
    """The same split with every array read-only (datasets are shared through the in-process cache)."""
    for array in [*split.features.values(), *split.lengths.values(), split.labels, split.ids,
                  *([] if split.regression is None else [split.regression])]:
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
        arrays[plan.name] = record
    dataset = _synth_from_arrays(params, arrays, notes, label_rule)
    for split in (dataset.train, dataset.valid, dataset.test):
        _frozen(split)
    return dataset


def _synth_from_arrays(params: synth.SynthParams, arrays: dict[str, dict[str, np.ndarray]],
                       notes: tuple[str, ...], label_rule: str | None = None) -> Dataset:
    modalities = [m.name for m in params.modalities]
    rule = label_rule or labels.default_rule(params.like)
    labels.check_rule(params.like, rule)
    parts = {
        split: _split_arrays(arrays[split], labels.classes_for_family(arrays[split]["regression"], params.like, rule),
                             modalities)
        for split in mmsa.RAW_SPLITS
    }
    return Dataset(
        name=params.name, num_classes=params.num_classes, modalities=tuple(modalities),
        train=parts["train"], valid=parts["valid"], test=parts["test"],
        dev_index=splits.dev_index(parts["train"].labels, params.like), fingerprint=params.fingerprint,
        synthetic=True, source=params.source, notes=notes, label_rule=rule,
    )


@dataclass(frozen=True)
class FileSummary:
    """What `bench data inspect` prints about a file."""

    path: Path
    sha256: str
    dataset: Dataset


def inspect_file(path: Path, num_classes: int | None = None) -> FileSummary:
    """Load (converting if needed) a file at full size, for `bench data inspect`."""
    dataset = load_file(Path(path), "full", num_classes=num_classes)
    return FileSummary(Path(path), dataset.fingerprint, dataset)
