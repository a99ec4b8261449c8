"""Statistics over seeds: summaries, Welch's t-test, bootstrap intervals, ranks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # significance level of the dagger mark
STRONG_ALPHA = 0.01  # double dagger
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1) of the values of one cell."""

    mean: float
    std: float  # NaN below 2 values
    n: int


def summarise(values: Sequence[float]) -> Summary:
    """Mean and std with ddof=1 over the finite values; NaN where undefined."""
    arr = _finite(values)
    if arr.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(arr, ddof=1)) if arr.size >= 2 else math.nan
    return Summary(float(np.mean(arr)), std, int(arr.size))


FEW_SEEDS = "fewer than 2 seeds on a side"
NO_VARIANCE = "zero variance in both groups (every seed gave the same value)"


def untestable(sample: Sequence[float], baseline: Sequence[float]) -> str:
    """Why Welch's t-test is undefined for these samples ("" when it is defined)."""
    a, b = _finite(sample), _finite(baseline)
    if a.size < 2 or b.size < 2:
        return FEW_SEEDS
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return NO_VARIANCE  # the t statistic divides by zero
    return ""


def welch_p(sample: Sequence[float], baseline: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN where `untestable` gives a reason.

    The test is computed from the means and sample variances: scipy's ttest_ind would warn about
    precision loss for a constant group (two seeds with equal accuracies), where the test is still
    well defined (the other group's variance carries it).
    """
    if untestable(sample, baseline):
        return math.nan
    a, b = _finite(sample), _finite(baseline)
    result = scipy_stats.ttest_ind_from_stats(float(np.mean(a)), float(np.std(a, ddof=1)), a.size,
                                              float(np.mean(b)), float(np.std(b, ddof=1)), b.size,
                                              equal_var=False)
    return float(result.pvalue)


def bootstrap_ci(sample: Sequence[float], baseline: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(sample) - mean(baseline), each side resampled on its own."""
    a, b = _finite(sample), _finite(baseline)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan
    # A fixed seed per call makes every interval reproducible whatever order cells are computed in.
    rng = np.random.default_rng(seed)
    mean_a = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    mean_b = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(mean_a - mean_b, [tail, 100.0 - tail])
    return float(low), float(high)


def verdict(p_value: float, difference: float, higher_is_better: bool) -> str:
    """'better' / 'worse' (significant at ALPHA) / 'tie' (not significant) / 'n/a' (not testable)."""
    if math.isnan(p_value):
        return "n/a"
    if p_value >= ALPHA:
        return "tie"
    improved = difference > 0 if higher_is_better else difference < 0
    return "better" if improved else "worse"


def significance_mark(p_value: float) -> str:
    """'‡' below STRONG_ALPHA, '†' below ALPHA, '' otherwise."""
    if math.isnan(p_value) or p_value >= ALPHA:
        return ""
    return "‡" if p_value < STRONG_ALPHA else "†"


def dense_ranks(means: Sequence[float], higher_is_better: bool, decimals: int = 2) -> list[int]:
    """Dense rank (1 = best) of each mean as printed (rounded), 0 for a missing value.

    Ranking the printed value means two cells that read the same get the same mark.
    """
    rounded = [round(m, decimals) if not math.isnan(m) else math.nan for m in means]
    distinct = sorted({r for r in rounded if not math.isnan(r)}, reverse=higher_is_better)
    position = {value: i + 1 for i, value in enumerate(distinct)}
    return [0 if math.isnan(r) else position[r] for r in rounded]


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    return arr[np.isfinite(arr)]
