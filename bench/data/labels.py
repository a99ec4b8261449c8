"""Class labels from the continuous sentiment score in [-3, 3] (thesis 6.2.1).

MOSI: 3 classes, negative (y < 0) -> 0, neutral (y == 0) -> 1, positive (y > 0) -> 2.
MOSEI: 7 classes, round(clip(y, -3, 3)) + 3 with numpy's half-to-even rounding, so -0.5 -> 3 and
2.5 -> 5. Custom files use their `classification_labels` when they have them, else the family rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.types import DataError

FAMILY_CLASSES = {"mosi": 3, "mosei": 7}
MOSI_CLASS_NAMES = ("negative", "neutral", "positive")
MOSEI_CLASS_NAMES = ("-3", "-2", "-1", "0", "+1", "+2", "+3")


def mosi_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) int64 in {0, 1, 2}: negative / neutral (exactly 0) / positive."""
    scores = np.asarray(scores)
    return (np.sign(scores).astype(np.int64) + 1).reshape(scores.shape)


def mosei_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) int64 in 0..6: round(clip(y, -3, 3)) + 3, ties to even as numpy rounds."""
    rounded = np.round(np.clip(np.asarray(scores, dtype=np.float64), -3.0, 3.0))
    return rounded.astype(np.int64) + 3


def binary_labels(scores: np.ndarray, include_zero: bool = True) -> np.ndarray:
    """MSA-style 2-class target: 1 for y >= 0 (or y > 0 when not include_zero), else 0."""
    scores = np.asarray(scores)
    return (scores >= 0 if include_zero else scores > 0).astype(np.int64)


def family_for_path(path: Path | str) -> str:
    """'mosei' when the path (any part of it) names MOSEI, else 'mosi': the rule for custom files."""
    return "mosei" if "mosei" in str(path).lower() else "mosi"


def classes_for_family(scores: np.ndarray, family: str) -> np.ndarray:
    """Class indices by the family's rule ('mosei' -> 7 classes, anything else -> 3)."""
    return mosei_classes(scores) if family == "mosei" else mosi_classes(scores)


def num_classes_for_family(family: str) -> int:
    return FAMILY_CLASSES.get(family, 3)


def class_names(num_classes: int) -> tuple[str, ...]:
    """Readable names for the histogram in `bench data inspect`."""
    if num_classes == 3:
        return MOSI_CLASS_NAMES
    if num_classes == 7:
        return MOSEI_CLASS_NAMES
    return tuple(str(k) for k in range(num_classes))


def given_classes(values: np.ndarray, num_classes: int | None, where: str) -> tuple[np.ndarray, int]:
    """Validate a file's own `classification_labels`: integers in [0, num_classes); K = max + 1 if not given."""
    values = np.asarray(values)
    flat = values.reshape(-1)
    if flat.size and not np.all(np.isfinite(flat.astype(np.float64))):
        raise DataError(f"{where}: classification_labels contain NaN or inf")
    as_int = flat.astype(np.int64)
    if flat.size and not np.array_equal(as_int, flat.astype(np.float64)):
        raise DataError(f"{where}: classification_labels must be whole numbers, found e.g. "
                        f"{flat[as_int != flat][0]!r}")
    top = int(as_int.max()) if as_int.size else 0
    k = top + 1 if num_classes is None else int(num_classes)
    if as_int.size and (as_int.min() < 0 or top >= k):
        raise DataError(f"{where}: classification_labels must lie in [0, {k - 1}], "
                        f"found min {as_int.min()}, max {top}")
    return as_int, k
