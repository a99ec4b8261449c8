"""MMSA-exact regression metrics (bench.metrics.regression_metrics) and the scikit-learn F1 helpers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score

from bench.metrics import (
    REGRESSION_METRIC_MODES,
    REGRESSION_METRICS,
    classification_metrics,
    macro_f1,
    regression_metrics,
    weighted_f1,
)

# idx:                0    1     2    3    4     5    6     7    8     9
PRED = np.array([0.5, 1.5, -2.5, 2.5, 3.7, -0.4, 0.0, -1.2, 2.2, 0.3])
TRUTH = np.array([0.0, 2.0, -2.0, 3.0, 3.0, 0.0, -0.6, -1.4, 2.6, -3.4])


def _old_macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """bench.metrics.macro_f1 as it was before scikit-learn: the reference the new one must match bit for bit."""
    classes = np.union1d(pred, labels)
    scores = []
    for k in classes:
        tp = np.sum((pred == k) & (labels == k))
        fp = np.sum((pred == k) & (labels != k))
        fn = np.sum((pred != k) & (labels == k))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return 100.0 * float(np.mean(scores)) if scores else float("nan")


def test_regression_metrics_by_hand() -> None:
    out = regression_metrics(PRED, TRUTH)
    assert tuple(out) == REGRESSION_METRICS
    # mae: |p - y| = .5 .5 .5 .5 .7 .4 .6 .2 .4 3.7 -> sum 8.0 / 10 = 0.8 (unclipped: idx 9 counts 3.7, not 3.3)
    assert out["mae"] == pytest.approx(0.8, abs=1e-12)
    # corr (unclipped): mean p = 6.6/10 = .66, mean y = 3.2/10 = .32
    #   Sxy = sum(p*y) - N*mp*my = 32.98 - 2.112 = 30.868
    #   Sxx = sum(p^2) - N*mp^2 = 35.22 - 4.356 = 30.864;  Syy = sum(y^2) - N*my^2 = 46.64 - 1.024 = 45.616
    assert out["corr"] == pytest.approx(30.868 / math.sqrt(30.864 * 45.616), abs=1e-12)
    # acc7: clip to [-3, 3] and round half to even
    #   preds [.5 1.5 -2.5 2.5 3(3.7) -.4 0 -1.2 2.2 .3] -> [0 2 -2 2 3 -0 0 -1 2 0]
    #   truth [0 2 -2 3 3 0 -.6 -1.4 2.6 -3(-3.4)]     -> [0 2 -2 3 3 0 -1 -1 3 -3]
    #   match at idx 0 1 2 4 5 7 -> 6 of 10 = 60.0 (half away from zero would give 1 -3 3 at idx 0 2 3: 5 of 10)
    assert out["acc7"] == 60.0
    # acc5: clip to [-2, 2] and round
    #   preds [.5 1.5 -2 2 2 -.4 0 -1.2 2 .3] -> [0 2 -2 2 2 -0 0 -1 2 0]
    #   truth [0 2 -2 2 2 0 -.6 -1.4 2 -2]    -> [0 2 -2 2 2 0 -1 -1 2 -2]
    #   mismatch only at idx 6 and 9 -> 8 of 10 = 80.0 (idx 3 and 8 match only because of the tighter clip)
    assert out["acc5"] == 80.0
    # has0, all samples: truth y >= 0 [T T F T T T F F T F], pred p >= 0 [T T F T T F T F T T]
    #   mismatch at idx 5 (y=0, p=-.4), 6 (y=-.6, p=0.0), 9 -> 7 of 10 = 70.0
    assert out["acc2_has0"] == 70.0
    #   class True:  support 6, tp 5 (0 1 3 4 8), fp 2 (6 9), fn 1 (5) -> F1 = 10/(10+2+1) = 10/13
    #   class False: support 4, tp 2 (2 7),       fp 1 (5),   fn 2 (6 9) -> F1 = 4/(4+1+2) = 4/7
    #   weighted = (6 * 10/13 + 4 * 4/7) / 10 = 628/910 -> 69.0109...%
    assert out["f1_has0"] == pytest.approx(100 * (6 * 10 / 13 + 4 * 4 / 7) / 10, abs=1e-12)
    # non0: drop idx 0 and 5 (y == 0); idx 1 2 3 4 6 7 8 9
    #   truth y > 0 [T F T T F F T F], pred p > 0 [T F T T F F T T] (idx 6: p = 0.0 is not > 0)
    #   mismatch only at idx 9 -> 7 of 8 = 87.5
    assert out["acc2_non0"] == 87.5
    #   class True:  support 4, tp 4, fp 1 (9), fn 0 -> 8/9;  class False: support 4, tp 3, fp 0, fn 1 (9) -> 6/7
    #   weighted = (4 * 8/9 + 4 * 6/7) / 8 = 55/63 -> 87.3015...%
    assert out["f1_non0"] == pytest.approx(100 * (4 * 8 / 9 + 4 * 6 / 7) / 8, abs=1e-12)


def test_regression_metrics_accepts_column_vectors_and_float32() -> None:
    flat = regression_metrics(PRED, TRUTH)
    assert regression_metrics(PRED.reshape(-1, 1), TRUTH.reshape(-1, 1)) == flat
    as32 = regression_metrics(PRED.astype(np.float32), TRUTH.astype(np.float32))
    for key in ("acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"):
        assert as32[key] == flat[key]  # float32 values widen exactly; only mae / corr move in the last digits
    assert as32["mae"] == pytest.approx(flat["mae"], rel=1e-6)


def test_regression_metrics_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        regression_metrics(PRED, TRUTH[:-1])
    with pytest.raises(ValueError, match="1-D"):
        regression_metrics(PRED.reshape(2, 5), TRUTH.reshape(2, 5))
    with pytest.raises(ValueError, match="at least one"):
        regression_metrics(np.array([]), np.array([]))


@pytest.mark.parametrize("constant", [np.full(10, 1.0), np.full(10, 0.3)])
def test_constant_predictions_give_nan_corr_without_a_warning(constant: np.ndarray) -> None:
    # np.full(10, 0.3) has a mean that is not exactly 0.3, so np.corrcoef alone returns 4e-17 there, not NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = regression_metrics(constant, TRUTH)
        flipped = regression_metrics(PRED, constant)
    assert math.isnan(out["corr"]) and math.isnan(flipped["corr"])
    assert out["mae"] == pytest.approx(float(np.mean(np.abs(constant - TRUTH))))


def test_all_zero_targets_leave_non0_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = regression_metrics(np.array([0.4, -0.2, 0.0]), np.zeros(3))
    assert math.isnan(out["acc2_non0"]) and math.isnan(out["f1_non0"]) and math.isnan(out["corr"])
    # has0: truth all >= 0; preds >= 0 at idx 0 and 2 -> 2 of 3; F1: class True support 3, tp 2 fn 1 -> 4/5,
    # class False support 0 (weight 0)
    assert out["acc2_has0"] == pytest.approx(200 / 3)
    assert out["f1_has0"] == pytest.approx(80.0)


def test_regression_metric_modes() -> None:
    assert set(REGRESSION_METRIC_MODES) == set(REGRESSION_METRICS)
    assert REGRESSION_METRIC_MODES["mae"] == "min"
    assert all(REGRESSION_METRIC_MODES[k] == "max" for k in REGRESSION_METRICS if k != "mae")


def _mmsa_style(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """An independent spelling of MMSA's __eval_mosei_regression (sklearn argument order as there), in %."""
    def multiclass_acc(p: np.ndarray, t: np.ndarray) -> float:
        return float(np.sum(np.round(p) == np.round(t)) / float(len(t)))

    nz = np.flatnonzero(truth != 0)
    return {
        "mae": float(np.mean(np.absolute(pred - truth))),
        "acc7": 100 * multiclass_acc(np.clip(pred, -3.0, 3.0), np.clip(truth, -3.0, 3.0)),
        "acc5": 100 * multiclass_acc(np.clip(pred, -2.0, 2.0), np.clip(truth, -2.0, 2.0)),
        "acc2_has0": 100 * float(accuracy_score(pred >= 0, truth >= 0)),
        "f1_has0": 100 * float(f1_score(truth >= 0, pred >= 0, average="weighted")),
        "acc2_non0": 100 * float(accuracy_score(pred[nz] > 0, truth[nz] > 0)),
        "f1_non0": 100 * float(f1_score(truth[nz] > 0, pred[nz] > 0, average="weighted")),
    }


_scores = st.one_of(st.sampled_from([-3.5, -3.0, -2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 3.0, 3.5]),
                    st.floats(-4.0, 4.0, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_scores, _scores), min_size=2, max_size=40))
def test_regression_metrics_match_an_mmsa_style_reference(pairs: list[tuple[float, float]]) -> None:
    pred = np.array([p for p, _ in pairs])
    truth = np.array([t for _, t in pairs])
    truth[0] = 1.0  # at least one non-zero target so MMSA's non0 branch is defined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference may warn (sklearn ill-defined F1); ours is checked elsewhere
        expected = _mmsa_style(pred, truth)
    out = regression_metrics(pred, truth)
    for key, value in expected.items():
        assert out[key] == value, key
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corr = float(np.corrcoef(pred, truth)[0, 1])
    if np.ptp(pred) > 0 and np.ptp(truth) > 0 and not caught:
        assert out["corr"] == corr
    else:
        assert math.isnan(out["corr"])


def test_weighted_and_macro_f1_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 3, 2])
    # class 0: support 3, tp 2 fp 0 fn 1 -> 4/5; class 1: support 2, tp 1 fp 1 fn 1 -> 2/4;
    # class 2: support 1, tp 1 -> 1; class 3 (predicted only): support 0, tp 0 fp 1 -> 0
    # weighted = (3 * 4/5 + 2 * 1/2 + 1 * 1 + 0 * 0) / 6 = 4.4/6 -> 73.33%; macro = (.8 + .5 + 1 + 0) / 4 = 57.5%
    assert weighted_f1(pred, labels) == pytest.approx(100 * 4.4 / 6, abs=1e-12)
    assert macro_f1(pred, labels) == pytest.approx(57.5, abs=1e-12)
    assert math.isnan(weighted_f1(np.array([], dtype=int), np.array([], dtype=int)))


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.lists(st.integers(0, 6), min_size=n, max_size=n),
                                                      st.lists(st.integers(0, 6), min_size=n, max_size=n))))
def test_macro_f1_is_bit_identical_to_the_old_formula(pair: tuple[list[int], list[int]]) -> None:
    pred, labels = (np.array(v, dtype=np.int64) for v in pair)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = macro_f1(pred, labels)
    old = _old_macro_f1(pred, labels)
    assert new == old or (math.isnan(new) and math.isnan(old))


def test_macro_f1_matches_the_old_formula_on_random_draws() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, k = int(rng.integers(1, 80)), int(rng.integers(1, 8))
        pred, labels = rng.integers(0, k, n), rng.integers(0, k, n)
        assert macro_f1(pred, labels) == _old_macro_f1(pred, labels)


def test_classification_metrics_keys_unchanged() -> None:
    import torch

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, 2])
    out = classification_metrics(logits, labels, {"text": logits})
    assert set(out) == {"acc", "loss", "f1", "acc_text", "loss_text"}
    assert out["f1"] == _old_macro_f1(np.array([0, 1, 2]), labels.numpy())


# -- CH-SIMS (MetricsTop.__eval_sims_regression) ------------------------------------------------------------

# idx:                   0     1     2    3     4
SIMS_PRED = np.array([-1.5, -0.5, 0.05, 0.3, 0.65])
SIMS_TRUTH = np.array([-0.8, 0.0, 0.0, 0.6, 1.0])


def test_sims_metrics_by_hand() -> None:
    """Clipped pred -1.0 -0.5 0.05 0.3 0.65 vs truth -0.8 0 0 0.6 1.0.
    Acc-2 classes ((-1.01, 0] -> 0, (0, 1.01] -> 1): pred 0 0 1 1 1, truth 0 0 0 1 1 -> 4/5 (idx 2 misses).
    Acc-3 (cuts -0.1, 0.1): pred 0 0 1 2 2, truth 0 1 1 2 2 -> 4/5 (idx 1).
    Acc-5 (cuts -0.7, -0.1, 0.1, 0.7): pred 0 1 2 3 3, truth 0 2 2 3 4 -> 3/5 (idx 1, 4).
    F1 (weighted, 2 classes): class 0 P 2/2 R 2/3 F1 0.8 (support 3); class 1 P 2/3 R 2/2 F1 0.8 -> 0.8.
    MAE on the clipped values: (0.2 + 0.5 + 0.05 + 0.3 + 0.35) / 5 = 0.28 (unclipped it would be 0.38).
    Corr: deviations p -0.9 -0.4 0.15 0.4 0.75, t -0.96 -0.16 -0.16 0.44 0.84: 1.71 / sqrt(1.715 * 1.872).
    """
    from bench.metrics import SIMS_REGRESSION_METRICS, sims_regression_metrics

    out = sims_regression_metrics(SIMS_PRED, SIMS_TRUTH)
    assert tuple(out) == SIMS_REGRESSION_METRICS == ("acc2", "acc3", "acc5", "f1", "mae", "corr")
    assert out["acc2"] == pytest.approx(80.0) and out["acc3"] == pytest.approx(80.0)
    assert out["acc5"] == pytest.approx(60.0) and out["f1"] == pytest.approx(80.0)
    assert out["mae"] == pytest.approx(0.28)
    assert out["corr"] == pytest.approx(1.71 / math.sqrt(1.715 * 1.872))


def test_sims_bins_are_right_closed_at_every_cut() -> None:
    """A value on a cut belongs to the bin below it; the truth sits just above each cut.
    Acc-2: 0.0 -> 0 vs 0.01 -> 1 misses; 0.1 / 0.11 both 1; -0.7 / -0.69 both 0 -> 2/3.
    Acc-3: 0.0 / 0.01 both neutral; 0.1 -> neutral vs 0.11 -> positive misses; -0.7 / -0.69 both 0 -> 2/3.
    Acc-5: 0.0 / 0.01 both 2; 0.1 -> 2 vs 0.11 -> 3 misses; -0.7 -> 0 vs -0.69 -> 1 misses -> 1/3.
    """
    from bench.metrics import sims_regression_metrics

    out = sims_regression_metrics(np.array([0.0, 0.1, -0.7]), np.array([0.01, 0.11, -0.69]))
    assert out["acc2"] == pytest.approx(200 / 3)
    assert out["acc3"] == pytest.approx(200 / 3)
    assert out["acc5"] == pytest.approx(100 / 3)


def test_the_mmsa_set_is_todays_at_bound_three() -> None:
    from bench.metrics import METRIC_SETS

    assert METRIC_SETS["mmsa"].compute(PRED, TRUTH, 3.0) == regression_metrics(PRED, TRUTH)
    assert METRIC_SETS["mmsa"].keys == REGRESSION_METRICS
    assert METRIC_SETS["mmsa-sims"].directions["mae"] == "min"
