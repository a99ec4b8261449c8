"""Class labels from continuous sentiment scores, by named rules; each dataset spec lists the rules it admits.

The rules (a run's `label_rule`, part of its run id; `DatasetSpec.labels.rules`, the first is the default):
- "sign" (MOSI, scores in [-3, 3]; 3 classes): negative (y < 0) -> 0, neutral (y == 0) -> 1, positive -> 2.
- "binned" (MOSEI's default; 7 classes): the bins of the thesis's reference [133] (Delbrouck et al., 2020;
  their code's `cmumosei_7`): y < -2 -> 0, [-2, -1) -> 1, [-1, 0) -> 2, y == 0 -> 3, (0, 1] -> 4,
  (1, 2] -> 5, y > 2 -> 6. Only an exact 0 is neutral.
- "round" (MOSEI; 7 classes): round(clip(y, -3, 3)) + 3 with numpy's half-to-even rounding (the usual
  Acc-7 convention), so -0.5 -> 3 and 2.5 -> 5.
- "sims3" (CH-SIMS, scores in [-1, 1]; 3 classes): MMSA's Acc-3 bins for SIMS, [-1, -0.1] -> 0,
  (-0.1, 0.1] -> 1, (0.1, 1] -> 2 (on SIMS's 0.2 grid: negative / exactly 0 / positive).
- "sims5" (CH-SIMS; 5 classes): MMSA's Acc-5 bins, [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7],
  (0.7, 1] (the paper's negative / weakly negative / neutral / weakly positive / positive).
- "given": a "classes" dataset's own `classification_labels` (bench.data.loader).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.data.types import DataError

LABEL_RULES: tuple[str, ...] = ("sign", "binned", "round", "sims3", "sims5")
MOSI_CLASS_NAMES = ("negative", "neutral", "positive")
MOSEI_CLASS_NAMES = ("-3", "-2", "-1", "0", "+1", "+2", "+3")  # rounded scores
MOSEI_BIN_NAMES = ("<-2", "[-2,-1)", "[-1,0)", "0", "(0,1]", "(1,2]", ">2")  # [133]'s bins
SIMS3_NAMES = ("negative", "neutral", "positive")
SIMS5_NAMES = ("negative", "weakly negative", "neutral", "weakly positive", "positive")
SIMS3_CUTS = (-0.1, 0.1)  # MMSA __eval_sims_regression's inner Acc-3 cuts
SIMS5_CUTS = (-0.7, -0.1, 0.1, 0.7)  # and its inner Acc-5 cuts


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


def right_closed_bins(scores: np.ndarray, cuts: tuple[float, ...]) -> np.ndarray:
    """(N,) int64: the bin (c_i, c_i+1] of each score among the inner `cuts` (MMSA's SIMS binning).

    Class k holds c_k < y <= c_k+1 with c_0 = -inf and c_K = +inf, i.e. the number of cuts below y.
    """
    values = np.asarray(scores, dtype=np.float64)
    return np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left").astype(np.int64)


RULE_CLASSES = {"sign": 3, "binned": 7, "round": 7, "sims3": 3, "sims5": 5}  # classes each rule makes
RULE_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sign": mosi_classes,
    "binned": mosei_binned_classes,
    "round": mosei_rounded_classes,
    "sims3": lambda scores: right_closed_bins(scores, SIMS3_CUTS),
    "sims5": lambda scores: right_closed_bins(scores, SIMS5_CUTS),
}


def classes_by_rule(scores: np.ndarray, rule: str) -> np.ndarray:
    """Class indices of `scores` under a label rule (one of LABEL_RULES)."""
    function = RULE_FUNCTIONS.get(rule)
    if function is None:
        raise DataError(f"unknown label rule {rule!r}; choose from {', '.join(LABEL_RULES)}")
    return function(scores)


def binary_labels(scores: np.ndarray, include_zero: bool = True) -> np.ndarray:
    """MSA-style 2-class target: 1 for y >= 0 (or y > 0 when not include_zero), else 0."""
    scores = np.asarray(scores)
    return (scores >= 0 if include_zero else scores > 0).astype(np.int64)


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
