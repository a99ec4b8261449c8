"""Statistics over seeds: summaries, tests against a baseline, multiplicity control, effect sizes, power.

The tests a table makes (bench.report.model decides which cells are compared):

- **Paired** where two cells' runs are paired: runs of the same seed of two methods on the same dataset,
  modalities, task, model, batch size and profile share the data split, the batch order and the initial
  weights, so the per-seed differences cancel what the seed changes in both. Default test: the **exact
  sign-flip permutation test** of the mean paired difference (`sign_flip_p`). It assumes only that, with
  no effect, each difference is as likely positive as negative (symmetric about zero); a paired t-test
  also assumes normal differences, which five seeds cannot check. The price is granularity: with n pairs
  the permutation distribution has 2**n points, so the smallest two-sided p is 2 / 2**n — 1/16 = 0.0625
  for 5 seeds. **Five paired seeds can never give p < 0.05 with an exact test**: a table of 5 seeds shows
  no significant difference by construction, however large; that is what 5 seeds can honestly say
  without a normality assumption. `test="t"` takes the paired t-test instead (it can reach small p with 5
  seeds because it trusts the normal model); 8 or more seeds let the exact test reach 0.05 / few tests.
- **Welch's t-test** (unequal variances) where runs are not paired (different seeds, models or data).

Multiplicity: every p-value of one table forms one family, corrected by Holm-Bonferroni (controls the
family-wise error rate, no assumption about dependence) or Benjamini-Hochberg (controls the false
discovery rate, valid for independent or positively dependent tests). Marks and verdicts use the
corrected p.

Effect sizes: the difference to the baseline with a 95 % t-interval — of the mean paired difference
(df = n - 1) where paired, Welch-Satterthwaite otherwise. A percentile bootstrap over 3-5 seeds covers
far less than its nominal 95 % (it resamples 5 points and ignores the t-quantile), so intervals are
t-intervals; below MIN_SEEDS_INTERVAL seeds none is given ("too few seeds").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

ALPHA = 0.05  # significance level of the dagger mark (after correction)
STRONG_ALPHA = 0.01  # double dagger
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
POWER = 0.8
MIN_SEEDS_INTERVAL = 3  # fewer seeds: "too few seeds" instead of an interval
TOO_FEW_SEEDS = "too few seeds"
EXACT_MAX_PAIRS = 16  # 2**16 sign patterns enumerated; above, a fixed-seed Monte Carlo sample
MONTE_CARLO_FLIPS = 100_000

TESTS = ("exact", "t", "welch")  # the `test` option: paired exact / paired t (else Welch) / Welch everywhere
CORRECTIONS = ("holm", "bh", "none")
TEST_NAMES = {"exact": "paired exact sign-flip permutation", "t": "paired t", "welch": "Welch t"}
TEST_SHORT = {"exact": "perm", "t": "pt", "welch": "W"}  # the per-cell label in the tables
CORRECTION_NAMES = {"holm": "Holm-Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}


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
FEW_PAIRS = "fewer than 2 seeds shared with the baseline"
NO_VARIANCE = "zero variance in both groups (every seed gave the same value)"
NO_VARIANCE_PAIRED = "every paired difference is the same (the paired t statistic divides by zero)"


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


def paired_t_p(differences: Sequence[float]) -> float:
    """Two-sided p of the paired t-test on the differences (scipy's ttest_rel); NaN below 2 pairs or when
    every difference is the same (no spread to scale by)."""
    d = _finite(differences)
    if d.size < 2 or np.ptp(d) == 0:
        return math.nan
    t = float(np.mean(d)) / (float(np.std(d, ddof=1)) / math.sqrt(d.size))
    return float(2.0 * scipy_stats.t.sf(abs(t), d.size - 1))


def sign_flip_p(differences: Sequence[float], seed: int = BOOTSTRAP_SEED) -> float:
    """Two-sided p of the sign-flip permutation test of mean(differences) = 0; NaN below 2 pairs.

    Exact up to EXACT_MAX_PAIRS pairs: the share of the 2**n sign patterns whose |sum| reaches the
    observed |sum| (the observed pattern included, so p >= 2 / 2**n). Above that, MONTE_CARLO_FLIPS random
    patterns with a fixed seed and p = (1 + hits) / (1 + draws). Sums that differ only by float rounding
    count as equal (a relative tolerance of 1e-9), so identical differences are not split by noise.
    """
    d = _finite(differences)
    if d.size < 2:
        return math.nan
    observed = abs(float(d.sum()))
    tolerance = 1e-9 * max(observed, float(np.abs(d).sum()), 1e-300)
    if d.size <= EXACT_MAX_PAIRS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        sums = np.abs(signs @ d)
        return float(np.mean(sums >= observed - tolerance))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(MONTE_CARLO_FLIPS, d.size))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (1.0 + hits) / (1.0 + MONTE_CARLO_FLIPS)


def smallest_exact_p(pairs: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give with `pairs` pairs (2 / 2**n)."""
    return min(1.0, 2.0 / 2.0 ** pairs) if pairs >= 1 else math.nan


def paired_interval(differences: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    """t-interval of the mean paired difference (df = n - 1); NaN below MIN_SEEDS_INTERVAL pairs."""
    d = _finite(differences)
    if d.size < MIN_SEEDS_INTERVAL:
        return math.nan, math.nan
    half = float(scipy_stats.t.ppf(0.5 + level / 2.0, d.size - 1)) * float(np.std(d, ddof=1)) / math.sqrt(d.size)
    mean = float(np.mean(d))
    return mean - half, mean + half


def welch_interval(sample: Sequence[float], baseline: Sequence[float],
                   level: float = CI_LEVEL) -> tuple[float, float]:
    """Welch-Satterthwaite t-interval of mean(sample) - mean(baseline); NaN below MIN_SEEDS_INTERVAL seeds
    on a side. Both groups constant: the interval is the difference itself (zero width)."""
    a, b = _finite(sample), _finite(baseline)
    if a.size < MIN_SEEDS_INTERVAL or b.size < MIN_SEEDS_INTERVAL:
        return math.nan, math.nan
    va, vb = float(np.var(a, ddof=1)) / a.size, float(np.var(b, ddof=1)) / b.size
    difference = float(np.mean(a) - np.mean(b))
    if va + vb == 0:
        return difference, difference
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(scipy_stats.t.ppf(0.5 + level / 2.0, df)) * math.sqrt(va + vb)
    return difference - half, difference + half


def bootstrap_ci(sample: Sequence[float], baseline: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(sample) - mean(baseline), each side resampled on its own.

    Kept for callers of the old tables; the tables now print t-intervals (see the module docstring)."""
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


@dataclass(frozen=True)
class Comparison:
    """One test of a cell against another (its baseline, or the next-ranked cell)."""

    test: str  # "exact" / "t" / "welch" ("" when untested)
    p_value: float  # uncorrected, two-sided
    difference: float  # mean of ours - mean of theirs (paired: the mean paired difference)
    ci_low: float
    ci_high: float
    n_pairs: int = 0  # pairs used by a paired test, 0 for Welch
    untested: str = ""  # why no test ("" when tested)
    interval_note: str = ""  # TOO_FEW_SEEDS where no interval is given


def compare(sample: Sequence[float], baseline: Sequence[float],
            pairs: Sequence[tuple[float, float]] | None, test: str = "exact") -> Comparison:
    """Test `sample` against `baseline`: paired (pairs: (ours, theirs) per shared seed; None when the runs
    are not paired) with the exact sign-flip test or the paired t-test, else Welch."""
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose from {', '.join(TESTS)}")
    if pairs is not None and test != "welch":
        d = _finite([x - y for x, y in pairs])
        low, high = paired_interval(d)
        note = TOO_FEW_SEEDS if math.isnan(low) else ""
        difference = float(np.mean(d)) if d.size else math.nan
        if d.size < 2:
            return Comparison("", math.nan, difference, low, high, int(d.size), FEW_PAIRS, note)
        if test == "t" and np.ptp(d) == 0:
            return Comparison("", math.nan, difference, low, high, int(d.size), NO_VARIANCE_PAIRED, note)
        p = sign_flip_p(d) if test == "exact" else paired_t_p(d)
        return Comparison(test, p, difference, low, high, int(d.size), "", note)
    a, b = _finite(sample), _finite(baseline)
    difference = float(np.mean(a) - np.mean(b)) if a.size and b.size else math.nan
    low, high = welch_interval(a, b)
    note = TOO_FEW_SEEDS if math.isnan(low) else ""
    reason = untestable(a, b)
    return Comparison("" if reason else "welch", welch_p(a, b), difference, low, high, 0, reason, note)


def adjust(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Corrected p-values of one family (NaN entries are not tests: they stay NaN and do not count).

    holm: Holm-Bonferroni step-down, p_(i) * (m - i + 1) for the i-th smallest, made monotone and capped
    at 1. bh: Benjamini-Hochberg step-up, p_(i) * m / i made monotone from the largest down (scipy's
    false_discovery_control). none: the p-values unchanged.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose from {', '.join(CORRECTIONS)}")
    p = np.asarray(list(p_values), dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    if m == 0 or method == "none":
        return [float(v) for v in (p if method == "none" else out)]
    order = tested[np.argsort(p[tested], kind="stable")]
    ranked = p[order]
    if method == "holm":
        scaled = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        scaled = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out[order] = np.minimum(scaled, 1.0)
    return [float(v) for v in out]


def detectable_difference(n: int, std: float, paired: bool, alpha: float = ALPHA,
                          power: float = POWER) -> float:
    """The smallest true difference a two-sided t-test at `alpha` detects with probability `power`.

    paired: a one-sample t-test on n differences of standard deviation `std` (df = n - 1, standard error
    std / sqrt(n)); else two groups of n seeds each with a common std (df = 2n - 2, standard error
    std * sqrt(2 / n)). Solved exactly with the noncentral t distribution: power = P(T > t_crit) +
    P(T < -t_crit) for T ~ nct(df, difference / standard error). NaN below 2 seeds or without a std.
    """
    if n < 2 or not math.isfinite(std) or std < 0:
        return math.nan
    df = n - 1 if paired else 2 * n - 2
    se = std / math.sqrt(n) if paired else std * math.sqrt(2.0 / n)
    if se == 0:
        return 0.0
    critical = scipy_stats.t.ppf(1.0 - alpha / 2.0, df)

    def shortfall(nc: float) -> float:
        # The lower tail is tiny for nc > 0, and scipy's nct.cdf returns NaN for some far-out arguments.
        lower = float(scipy_stats.nct.cdf(-critical, df, nc))
        return float(scipy_stats.nct.sf(critical, df, nc)) + (lower if math.isfinite(lower) else 0.0) - power

    upper = 1.0
    while shortfall(upper) < 0:  # widen the bracket; nct loses precision far out, hence the cap
        upper *= 2.0
        if upper > 1024.0 or math.isnan(shortfall(upper)):
            return math.nan
    nc = optimize.brentq(shortfall, 0.0, upper, xtol=1e-10)
    return float(nc * se)


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
