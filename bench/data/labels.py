"""Class labels from the continuous sentiment score in [-3, 3] (thesis 6.2.1).

MOSI: 3 classes by sign ("sign"): negative (y < 0) -> 0, neutral (y == 0) -> 1, positive (y > 0) -> 2.
MOSEI: 7 classes, two rules (a run's `label_rule`, part of its run id):
- "binned" (the default): the bins of the thesis's reference [133] (Delbrouck et al., 2020; their
  code's `cmumosei_7`): y < -2 -> 0, [-2, -1) -> 1, [-1, 0) -> 2, y == 0 -> 3, (0, 1] -> 4,
  (1, 2] -> 5, y > 2 -> 6. Only an exact 0 is neutral.
- "round": round(clip(y, -3, 3)) + 3 with numpy's half-to-even rounding (the usual Acc-7 convention),
  so -0.5 -> 3 and 2.5 -> 5.
Custom files use their `classification_labels` when they have them, else the family rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.types import DataError

FAMILY_CLASSES = {"mosi": 3, "mosei": 7}
# The label rules each family admits; the first is its default.
FAMILY_RULES: dict[str, tuple[str, ...]] = {"mosi": ("sign",), "mosei": ("binned", "round")}
LABEL_RULES: tuple[str, ...] = ("sign", "binned", "round")
MOSI_CLASS_NAMES = ("negative", "neutral", "positive")
MOSEI_CLASS_NAMES = ("-3", "-2", "-1", "0", "+1", "+2", "+3")  # rounded scores
MOSEI_BIN_NAMES = ("<-2", "[-2,-1)", "[-1,0)", "0", "(0,1]", "(1,2]", ">2")  # [133]'s bins


def mosi_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) int64 in {0, 1, 2}: negative / neutral (exactly 0) / positive."""
    scores = np.asarray(scores)
    return (np.sign(scores).astype(np.int64) + 1).reshape(scores.shape)


def mosei_rounded_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) int64 in 0..6: round(clip(y, -3, 3)) + 3, ties to even as numpy rounds."""
    rounded = np.round(np.clip(np.asarray(scores, dtype=np.float64), -3.0, 3.0))
    return rounded.astype(np.int64) + 3


def mosei_binned_classes(scores: np.ndarray) -> np.ndarray:
    """(N,) scores -> (N,) int64 in 0..6 by [133]'s bins: left-closed below 0, right-closed above 0."""
    values = np.asarray(scores, dtype=np.float64)
    below = np.digitize(values, [-2.0, -1.0, 0.0], right=False)  # y < -2 -> 0, [-2,-1) -> 1, [-1,0) -> 2
    above = 3 + np.digitize(values, [0.0, 1.0, 2.0], right=True)  # 0 -> 3, (0,1] -> 4, (1,2] -> 5, > 2 -> 6
    return np.where(values < 0, below, above).astype(np.int64).reshape(values.shape)


def classes_by_rule(scores: np.ndarray, rule: str) -> np.ndarray:
    """Class indices of `scores` under a label rule ("sign", "binned" or "round")."""
    if rule == "sign":
        return mosi_classes(scores)
    if rule == "binned":
        return mosei_binned_classes(scores)
    if rule == "round":
        return mosei_rounded_classes(scores)
    raise DataError(f"unknown label rule {rule!r}; choose from {', '.join(LABEL_RULES)}")


def default_rule(family: str) -> str:
    """The label rule a family uses unless a run asks for another ('mosei' -> binned, else sign)."""
    return FAMILY_RULES.get(family, FAMILY_RULES["mosi"])[0]


def check_rule(family: str, rule: str) -> None:
    """DataError unless `rule` is one of the family's rules (MOSI-like data has only 'sign')."""
    allowed = FAMILY_RULES.get(family, FAMILY_RULES["mosi"])
    if rule not in allowed:
        classes = num_classes_for_family(family)
        raise DataError(f"label rule {rule!r} does not apply to {classes}-class {family.upper()}-style labels; "
                        f"choose from {', '.join(allowed)}")


def binary_labels(scores: np.ndarray, include_zero: bool = True) -> np.ndarray:
    """MSA-style 2-class target: 1 for y >= 0 (or y > 0 when not include_zero), else 0."""
    scores = np.asarray(scores)
    return (scores >= 0 if include_zero else scores > 0).astype(np.int64)


def family_for_path(path: Path | str) -> str:
    """'mosei' when the path (any part of it) names MOSEI, else 'mosi': the rule for custom files."""
    return "mosei" if "mosei" in str(path).lower() else "mosi"


def classes_for_family(scores: np.ndarray, family: str, rule: str | None = None) -> np.ndarray:
    """Class indices by the family's default rule, or `rule` ('mosei' -> 7 classes, anything else -> 3)."""
    chosen = default_rule(family) if rule is None else rule
    check_rule(family if family in FAMILY_RULES else "mosi", chosen)
    return classes_by_rule(scores, chosen)


def num_classes_for_family(family: str) -> int:
    return FAMILY_CLASSES.get(family, 3)


def class_names(num_classes: int, rule: str = "") -> tuple[str, ...]:
    """Readable names for the histogram in `bench data inspect` (7 classes: the bins of `rule`)."""
    if num_classes == 3:
        return MOSI_CLASS_NAMES
    if num_classes == 7:
        return MOSEI_BIN_NAMES if rule == "binned" else MOSEI_CLASS_NAMES
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
