"""MMSA-format pickles: read through the restricted unpickler, validate, normalise.

Schema (design.md, Data): top-level `train` / `valid` / `test`; per split one (N, T_m, D_m) array per
modality the dataset spec declares (MOSI / MOSEI / CH-SIMS: `text`, `audio`, `vision`; any other names a
spec declares the same way), `<modality>_lengths` (optional), `regression_labels` in the spec's score
range ([-3, 3] for MOSI) and/or `classification_labels`, the spec's per-modality score keys (CH-SIMS
`regression_labels_T` / `_A` / `_V`), `id`, `raw_text`. Feature sizes and sequence lengths are read
from the arrays. A modality without a lengths key (text, or every modality of an aligned file) gets
the index of its last step that is not all zeros, plus one (at least 1).

What loading changes, and records as notes: -inf feature values are set to 0 (MMSA's own loader does
this for audio; here for every modality), lengths of 0 become 1 (LSTM packing needs >= 1), a missing
`id` becomes "<split>_<row>". Everything else that is off is an error naming file, split, key and
expected vs found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.labels import given_classes
from bench.data.safe_pickle import safe_load
from bench.data.types import DataError

RAW_SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")  # MOSI / MOSEI / CH-SIMS: the default when no spec is given
LABEL_RANGE = 3.0
DEFAULT_RANGE = (-LABEL_RANGE, LABEL_RANGE)


@dataclass(frozen=True)
class Schema:
    """What a file must hold, from its dataset spec: modality names, score range, per-modality score keys."""

    modalities: tuple[str, ...] = MODALITIES
    score_range: tuple[float, float] = DEFAULT_RANGE
    modality_labels: tuple[tuple[str, str], ...] = ()  # (modality, key in the file)

    @classmethod
    def of(cls, spec: Any) -> Schema:
        """The schema of a bench.data.spec.DatasetSpec (None: MOSI's)."""
        if spec is None:
            return cls()
        score_range = spec.labels.score_range if spec.labels.score_range is not None else DEFAULT_RANGE
        return cls(tuple(spec.modalities), (float(score_range[0]), float(score_range[1])),
                   tuple(spec.per_modality_labels.items()))


def length_key(modality: str) -> str:
    return f"{modality}_lengths"
SCAN_ROWS = 512  # rows per chunk when scanning features, so temporaries stay small


class Findings:
    """Problems and notes of one validation; strict mode raises at the first problem."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.problems: list[str] = []
        self.notes: list[str] = []

    def problem(self, message: str) -> None:
        if self.strict:
            raise DataError(message)
        self.problems.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)


@dataclass
class CleanSplit:
    """One validated split: float32 features, int64 lengths, labels as found."""

    features: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N, T, D) float32
    lengths: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N,) int64, >= 1
    regression: np.ndarray | None = None  # (N,) float32 in the schema's score range
    modality_scores: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N,) float32
    classification: np.ndarray | None = None  # (N,) as found (checked later, against all splits)
    ids: np.ndarray | None = None  # (N,) str

    @property
    def size(self) -> int:
        if self.regression is not None:
            return int(self.regression.shape[0])
        if self.classification is not None:
            return int(self.classification.shape[0])
        return 0


def read_raw(path: Path | str) -> dict[str, Any]:
    """The unpickled top-level dict, checked to have the three splits as dicts."""
    path = Path(path)
    raw = safe_load(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict with keys train/valid/test at the top level, "
                        f"found {type(raw).__name__}")
    for split in RAW_SPLITS:
        if split not in raw:
            found = ", ".join(sorted(map(str, raw))) or "nothing"
            raise DataError(f"{path}: missing split '{split}' (expected train, valid, test; found {found})")
        if not isinstance(raw[split], dict):
            raise DataError(f"{path}: split '{split}': expected a dict of arrays, found "
                            f"{type(raw[split]).__name__}")
    return raw


def split_modalities(path: Path | str, raw: dict[str, Any], schema: Schema = Schema()) -> tuple[str, ...]:
    """The schema's modalities present in train (its order); every split must have the same ones."""
    present = tuple(m for m in schema.modalities if m in raw["train"])
    if not present:
        names = schema.modalities
        expected = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and/or {names[-1]}"
        raise DataError(f"{path}: split 'train': missing key '{names[0]}' (no feature key at all: expected "
                        f"{expected})")
    for split in RAW_SPLITS[1:]:
        for modality in present:
            if modality not in raw[split]:
                raise DataError(f"{path}: split '{split}': missing key '{modality}' (train has it)")
    return present


def iter_clean_splits(path: Path | str, raw: dict[str, Any], findings: Findings,
                      schema: Schema = Schema()) -> Iterator[tuple[str, CleanSplit]]:
    """Validate and normalise split by split, removing each split from `raw` as it goes (frees memory)."""
    modalities = split_modalities(path, raw, schema)
    widths: dict[str, int] = {}  # the train split's feature width per modality
    for split in RAW_SPLITS:
        part = raw.pop(split)
        clean = clean_split(part, modalities, f"{path}: split '{split}'", split, findings, schema)
        _check_widths(clean, widths, f"{path}: split '{split}'", findings)
        yield split, clean
        del part


def _check_widths(clean: CleanSplit, widths: dict[str, int], where: str, findings: Findings) -> None:
    """Every split's features have the first split's width per modality (a model is built for one width)."""
    for modality, features in clean.features.items():
        width = int(features.shape[-1])
        first = widths.setdefault(modality, width)
        if width != first:
            findings.problem(f"{where}, key '{modality}': feature width {width}, but train has {first}")


def clean_split(part: dict[str, Any], modalities: tuple[str, ...], where: str, split: str,
                findings: Findings, schema: Schema = Schema()) -> CleanSplit:
    """One split: labels first (they fix N), then each modality; keys are popped from `part`."""
    clean = CleanSplit()
    n = _labels(part, clean, where, findings, schema.score_range)
    if n > 0:
        _modality_scores(part, clean, n, where, findings, schema)
    if n == 0:
        findings.problem(f"{where}: the split is empty (0 samples)")
        return clean
    clean.ids = _ids(part, n, where, split, findings)
    for modality in modalities:
        features = _features(part.pop(modality), n, where, modality, split, findings)
        if features is None:
            continue
        lengths = _lengths(part, features, n, where, modality, split, findings)
        if lengths is not None:
            clean.features[modality] = features
            clean.lengths[modality] = lengths
    return clean


# -- labels and ids -----------------------------------------------------------------------------------


def _as_vector(value: Any, where: str, key: str, findings: Findings) -> np.ndarray | None:
    """A 1-D numeric array from an array or list; (N, 1) is accepted and flattened."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        findings.problem(f"{where}, key '{key}': not an array ({err})")
        return None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        findings.problem(f"{where}, key '{key}': expected 1 dimension (N,), found shape {array.shape}")
        return None
    if array.dtype.kind not in "biuf":
        findings.problem(f"{where}, key '{key}': expected numbers, found dtype {array.dtype}")
        return None
    return array


def _labels(part: dict[str, Any], clean: CleanSplit, where: str, findings: Findings,
            score_range: tuple[float, float] = DEFAULT_RANGE) -> int:
    """Read regression / classification labels; returns N (0 if none could be read)."""
    if "regression_labels" not in part and "classification_labels" not in part:
        findings.problem(f"{where}: missing key 'regression_labels' (nor 'classification_labels' found)")
        return 0
    if "regression_labels" in part:
        scores = _as_vector(part.pop("regression_labels"), where, "regression_labels", findings)
        if scores is not None:
            clean.regression = _checked_scores(scores.astype(np.float32), where, findings, score_range)
    if "classification_labels" in part:
        given = _as_vector(part.pop("classification_labels"), where, "classification_labels", findings)
        clean.classification = given
        if clean.regression is not None and given is not None and given.shape != clean.regression.shape:
            findings.problem(f"{where}, key 'classification_labels': expected {clean.regression.shape[0]} "
                             f"rows (as regression_labels), found {given.shape[0]}")
    return clean.size


def _modality_scores(part: dict[str, Any], clean: CleanSplit, n: int, where: str, findings: Findings,
                     schema: Schema) -> None:
    """The schema's per-modality score keys (CH-SIMS regression_labels_T/_A/_V): N finite scores in range."""
    for modality, key in schema.modality_labels:
        if key not in part:
            findings.problem(f"{where}: missing key '{key}' (the spec's scores of '{modality}')")
            continue
        scores = _as_vector(part.pop(key), where, key, findings)
        if scores is None:
            continue
        if scores.shape[0] != n:
            findings.problem(f"{where}, key '{key}': expected {n} rows (one per label), found {scores.shape[0]}")
            continue
        clean.modality_scores[modality] = _checked_scores(scores.astype(np.float32), where, findings,
                                                          schema.score_range, key)


def _checked_scores(scores: np.ndarray, where: str, findings: Findings,
                    score_range: tuple[float, float] = DEFAULT_RANGE, key: str = "regression_labels") -> np.ndarray:
    low, high = score_range
    shown = f"[{low:g}, {high:g}]"
    bad = ~np.isfinite(scores)
    if bad.any():
        findings.problem(f"{where}, key '{key}': {int(bad.sum())} NaN/inf values "
                         f"(expected finite scores in {shown})")
        return scores
    outside = (scores < low - 1e-4) | (scores > high + 1e-4)
    if outside.any():
        findings.problem(
            f"{where}, key '{key}': expected values in {shown}, found {int(outside.sum())} outside "
            f"(min {scores.min():.4g}, max {scores.max():.4g})"
        )
    return np.clip(scores, low, high)


def _ids(part: dict[str, Any], n: int, where: str, split: str, findings: Findings) -> np.ndarray:
    if "id" not in part:
        findings.note(f"no 'id' key in {split}: ids set to {split}_<row>")
        return np.asarray([f"{split}_{i}" for i in range(n)])
    ids = np.asarray(part.pop("id")).astype(str).reshape(-1)
    if ids.shape[0] != n:
        findings.problem(f"{where}, key 'id': expected {n} ids (one per label), found {ids.shape[0]}")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():  # the predictions' `sample` column is the key of a split's rows
        twice = unique[counts > 1]
        findings.problem(f"{where}, key 'id': {len(twice)} id(s) used more than once, e.g. {str(twice[0])!r}")
    return ids


# -- features and lengths -------------------------------------------------------------------------------


def _features(value: Any, n: int, where: str, modality: str, split: str,
              findings: Findings) -> np.ndarray | None:
    """(N, T, D) float32 with -inf zeroed; NaN / +inf and shape problems reported."""
    array = np.asarray(value)
    del value
    if array.ndim != 3:
        findings.problem(f"{where}, key '{modality}': expected 3 dimensions (N, T, D), found shape "
                         f"{array.shape}")
        return None
    if array.dtype.kind not in "biuf":
        findings.problem(f"{where}, key '{modality}': expected numbers, found dtype {array.dtype}")
        return None
    if array.shape[0] != n:
        findings.problem(f"{where}, key '{modality}': expected {n} rows (one per label), found "
                         f"{array.shape[0]} (shape {array.shape})")
        return None
    if array.shape[1] == 0 or array.shape[2] == 0:
        findings.problem(f"{where}, key '{modality}': empty time or feature axis, shape {array.shape}")
        return None
    # The unpickled array is usually a read-only view of the file's bytes: keep it (no second copy)
    # unless the dtype or layout must change or -inf values must be overwritten.
    array = np.ascontiguousarray(array, dtype=np.float32)
    nan, pos_inf, neg_inf = _count_non_finite(array)
    if nan or pos_inf:
        findings.problem(f"{where}, key '{modality}': {nan} NaN and {pos_inf} +inf values "
                         f"(expected finite features)")
    if neg_inf:
        if not array.flags.writeable:
            array = array.copy()
        _zero_negative_inf(array)
        findings.note(f"zeroed {neg_inf} -inf values in {modality}/{split}")
    return array


def _count_non_finite(array: np.ndarray) -> tuple[int, int, int]:
    """Counts of NaN, +inf, -inf, chunk by chunk so temporaries stay small."""
    nan = pos_inf = neg_inf = 0
    for start in range(0, array.shape[0], SCAN_ROWS):
        chunk = array[start:start + SCAN_ROWS]  # a view
        if np.isfinite(chunk).all():
            continue
        nan += int(np.isnan(chunk).sum())
        pos_inf += int(np.isposinf(chunk).sum())
        neg_inf += int(np.isneginf(chunk).sum())
    return nan, pos_inf, neg_inf


def _zero_negative_inf(array: np.ndarray) -> None:
    """Set -inf to 0 in place (what MMSA's loader does for audio), chunk by chunk."""
    for start in range(0, array.shape[0], SCAN_ROWS):
        chunk = array[start:start + SCAN_ROWS]
        chunk[np.isneginf(chunk)] = 0.0


def derived_lengths(features: np.ndarray) -> np.ndarray:
    """(N,) int64: index of the last step that is not all zeros, plus one; 0 for an all-zero sample."""
    out = np.zeros(features.shape[0], dtype=np.int64)
    steps = features.shape[1]
    for start in range(0, features.shape[0], SCAN_ROWS):
        used = np.any(features[start:start + SCAN_ROWS] != 0, axis=2)  # (rows, T) bool
        last_from_end = np.argmax(used[:, ::-1], axis=1)  # steps after the last used one
        out[start:start + used.shape[0]] = np.where(used.any(axis=1), steps - last_from_end, 0)
    return out


def _lengths(part: dict[str, Any], features: np.ndarray, n: int, where: str, modality: str, split: str,
             findings: Findings) -> np.ndarray | None:
    """(N,) int64 true lengths in [1, T]: from the lengths key when there is one, else derived."""
    key = length_key(modality)
    steps = features.shape[1]
    if key in part:
        given = _as_vector(part.pop(key), where, key, findings)
        if given is None:
            return None
        if given.shape[0] != n:
            findings.problem(f"{where}, key '{key}': expected {n} lengths (one per row of '{modality}'), "
                             f"found {given.shape[0]}")
            return None
        if given.dtype.kind == "f" and not np.array_equal(given, np.round(given)):
            findings.problem(f"{where}, key '{key}': expected whole numbers, found e.g. "
                             f"{given[given != np.round(given)][0]!r}")
            return None
        lengths = given.astype(np.int64)
        if (lengths < 0).any():
            findings.problem(f"{where}, key '{key}': expected lengths >= 0, found {int((lengths < 0).sum())} "
                             f"negative (min {int(lengths.min())})")
            return None
        if (lengths > steps).any():
            findings.problem(f"{where}, key '{key}': expected lengths <= {steps} (the padded size of "
                             f"'{modality}'), found {int((lengths > steps).sum())} longer (max {int(lengths.max())})")
            return None
        zeros = int((lengths == 0).sum())
        if zeros:
            findings.note(f"set {zeros} zero lengths to 1 in {modality}/{split}")
    else:
        lengths = derived_lengths(features)
        zeros = int((lengths == 0).sum())
        if zeros:
            findings.note(f"{zeros} all-zero samples in {modality}/{split}: length set to 1")
    return np.maximum(lengths, 1)


# -- whole-file helpers ---------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """What `check` found: the problems (errors), notes (what loading would change), a summary."""

    path: Path
    problems: list[str]
    notes: list[str]
    summary: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(path: Path | str, spec: Any = None) -> CheckReport:
    """Validate a file against its spec's schema (None: MOSI's) without stopping at the first problem;
    unreadable files are one problem."""
    path = Path(path)
    schema = Schema.of(spec)
    findings = Findings(strict=False)
    summary: list[str] = []
    try:
        raw = read_raw(path)
        modalities = split_modalities(path, raw, schema)
    except DataError as err:
        return CheckReport(path, [str(err)], [], [])
    label_keys = {key: all(key in raw[split] for split in RAW_SPLITS)
                  for key in ("regression_labels", "classification_labels")}
    classification_max = -1
    for split, clean in iter_clean_splits(path, raw, findings, schema):
        shapes = ", ".join(f"{m} {tuple(x.shape[1:])}" for m, x in clean.features.items())
        summary.append(f"{split}: {clean.size} samples; {shapes}")
        if clean.classification is not None and clean.classification.size:
            # The loader's own check (whole numbers >= 0, finite), so `check` passes only what loads.
            try:
                given, _ = given_classes(clean.classification, None, f"{path}: split '{split}'")
            except DataError as err:
                findings.problem(str(err))
                continue
            classification_max = max(classification_max, int(given.max()))
    needed = {"scores": "regression_labels", "classes": "classification_labels"}.get(
        spec.labels.kind if spec is not None else "", "")
    if needed and not label_keys[needed]:  # the spec's kind of labels decides which key the loader needs
        findings.problem(f"{path}: no '{needed}' in every split: cannot make class labels (the "
                         f"{spec.name} spec's labels need it)")
    elif not any(label_keys.values()):  # every split has labels, but not of one kind: the loader refuses it
        findings.problem(f"{path}: no 'regression_labels' in every split and no 'classification_labels' in "
                         "every split: cannot make class labels")
    summary.insert(0, f"modalities: {', '.join(modalities)}")
    if classification_max >= 0:
        summary.append(f"classification_labels present: {classification_max + 1} classes (max + 1)")
    return CheckReport(path, findings.problems, findings.notes, summary)
