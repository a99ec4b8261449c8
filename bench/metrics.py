"""Classification metrics from logits, MSA-style metrics derived from class probabilities, and MMSA's
regression metrics for sentiment-score predictions: the "mmsa" set (CMU-MOSI / CMU-MOSEI) and the
"mmsa-sims" set (CH-SIMS). A dataset spec names its set (`DatasetSpec.metric_set`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import Tensor
from torch.nn import functional as F


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in labels or predictions (scikit-learn), in %; NaN if empty."""
    classes = np.union1d(pred, labels)
    if classes.size == 0:
        return float("nan")
    return 100.0 * float(f1_score(labels, pred, average="macro", labels=classes, zero_division=0))


def weighted_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Support-weighted F1 (scikit-learn average="weighted", as MMSA reports it), in %; NaN if empty."""
    classes = np.union1d(pred, labels)
    if classes.size == 0:
        return float("nan")
    return 100.0 * float(f1_score(labels, pred, average="weighted", labels=classes, zero_division=0))


REGRESSION_METRICS: tuple[str, ...] = (
    "mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0",
)
"""Keys of regression_metrics, in MMSA's reporting order."""

REGRESSION_METRIC_MODES: dict[str, str] = {name: ("min" if name == "mae" else "max") for name in REGRESSION_METRICS}
"""Which direction is better for each regression metric: "min" (mae) or "max" (everything else)."""


def _flat_float64(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D or (N, 1), got shape {np.shape(values)}")
    return array


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """np.corrcoef(x, y)[0, 1]; NaN (and no warning) when either side is constant or has under two values.

    "Constant" is all values equal (np.corrcoef alone may return a rounding-noise value there instead of NaN)
    or a variance that underflows to zero (np.corrcoef would divide by zero).
    """
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        variances = np.diag(np.cov(x, y))
        if not np.all(np.isfinite(variances)) or np.any(variances <= 0):
            return float("nan")
        return float(np.corrcoef(x, y)[0, 1])


def regression_metrics(predictions: np.ndarray, targets: np.ndarray, bound: float = 3.0) -> dict[str, float]:
    """MMSA's CMU-MOSI / CMU-MOSEI regression metrics (MetricsTop.__eval_mosei_regression) in float64.

    predictions, targets: (N,) or (N, 1) sentiment scores on the [-bound, bound] scale (the spec's range;
    MOSI / MOSEI: 3). mae and corr are raw and use the unclipped values. Accuracies and F1 are in % (MMSA
    reports fractions): acc7 / acc5 clip both sides to [-bound, bound] / [-(bound - 1), bound - 1] (MOSI:
    [-3, 3] / [-2, 2]), round half to even and count exact matches;
    acc2_has0 / f1_has0 use every sample, truth >= 0 vs prediction >= 0;
    acc2_non0 / f1_non0 drop samples whose truth is 0, then truth > 0 vs prediction > 0 (NaN if none remain).
    F1 is the support-weighted F1 with the truth as y_true. Nothing is rounded to 4 places as MMSA does.
    """
    pred = _flat_float64(predictions, "predictions")
    truth = _flat_float64(targets, "targets")
    if pred.shape != truth.shape:
        raise ValueError(f"predictions and targets differ in length: {pred.size} vs {truth.size}")
    if pred.size == 0:
        raise ValueError("regression_metrics needs at least one sample")
    out: dict[str, float] = {
        "mae": float(np.mean(np.abs(pred - truth))),
        "corr": _pearson(pred, truth),
    }
    for key, clip in (("acc7", bound), ("acc5", bound - 1.0)):
        matches = np.round(np.clip(pred, -clip, clip)) == np.round(np.clip(truth, -clip, clip))
        out[key] = 100.0 * float(np.mean(matches))
    truth_has0, pred_has0 = truth >= 0, pred >= 0
    out["acc2_has0"] = 100.0 * float(np.mean(truth_has0 == pred_has0))
    out["f1_has0"] = weighted_f1(pred_has0, truth_has0)
    nonzero = truth != 0
    if nonzero.any():
        truth_non0, pred_non0 = truth[nonzero] > 0, pred[nonzero] > 0
        out["acc2_non0"] = 100.0 * float(np.mean(truth_non0 == pred_non0))
        out["f1_non0"] = weighted_f1(pred_non0, truth_non0)
    else:
        out["acc2_non0"] = out["f1_non0"] = float("nan")
    return out


SIMS_REGRESSION_METRICS: tuple[str, ...] = ("acc2", "acc3", "acc5", "f1", "mae", "corr")
"""Keys of sims_regression_metrics, in MMSA's reporting order (Mult_acc_2/3/5, F1_score, MAE, Corr)."""

SIMS_BINS: dict[str, tuple[float, ...]] = {  # MMSA's class edges; class i is (edge_i, edge_i+1]
    "acc2": (-1.01, 0.0, 1.01),
    "acc3": (-1.01, -0.1, 0.1, 1.01),
    "acc5": (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}


def _sims_classes(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """(N,) int64: i where edges[i] < v <= edges[i + 1] (every clipped value falls in one bin)."""
    return np.searchsorted(np.asarray(edges[1:-1]), values, side="left").astype(np.int64)


def sims_regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """MMSA's CH-SIMS regression metrics (MetricsTop.__eval_sims_regression) in float64, accuracies in %.

    Both sides are first clipped to [-1, 1]; everything below uses the clipped values. acc2 / acc3 / acc5:
    the share of samples whose prediction falls in the truth's bin, bins (-1.01, 0], (0, 1.01] /
    cuts -0.1, 0.1 / cuts -0.7, -0.1, 0.1, 0.7 (right-closed); f1: support-weighted F1 of the two acc2
    classes (truth as y_true); mae: mean |pred - truth|; corr: Pearson (NaN if either side is constant).
    """
    pred = np.clip(_flat_float64(predictions, "predictions"), -1.0, 1.0)
    truth = np.clip(_flat_float64(targets, "targets"), -1.0, 1.0)
    if pred.shape != truth.shape:
        raise ValueError(f"predictions and targets differ in length: {pred.size} vs {truth.size}")
    if pred.size == 0:
        raise ValueError("sims_regression_metrics needs at least one sample")
    out: dict[str, float] = {}
    for key, edges in SIMS_BINS.items():
        out[key] = 100.0 * float(np.mean(_sims_classes(pred, edges) == _sims_classes(truth, edges)))
    out["f1"] = weighted_f1(_sims_classes(pred, SIMS_BINS["acc2"]), _sims_classes(truth, SIMS_BINS["acc2"]))
    out["mae"] = float(np.mean(np.abs(pred - truth)))
    out["corr"] = _pearson(pred, truth)
    return {key: out[key] for key in SIMS_REGRESSION_METRICS}


@dataclass(frozen=True)
class MetricSet:
    """A regression metric set: its keys in reporting order, the better direction of each, the function."""

    name: str
    keys: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray, float], dict[str, float]]  # (pred, truth, bound) -> metrics

    @property
    def directions(self) -> dict[str, str]:
        return {key: ("min" if key == "mae" else "max") for key in self.keys}


METRIC_SETS: dict[str, MetricSet] = {
    "mmsa": MetricSet("mmsa", REGRESSION_METRICS, regression_metrics),
    "mmsa-sims": MetricSet("mmsa-sims", SIMS_REGRESSION_METRICS,
                           lambda pred, truth, bound: sims_regression_metrics(pred, truth)),
}


def sentiment_metrics(probs: np.ndarray, regression: np.ndarray, expected_value: bool = True) -> dict[str, float]:
    """Binary accuracies (MMSA 'Has0' / 'Non0') from probabilities of classes ordered negative -> positive.

    probs: (N, K). Classes below the middle are negative, above it positive, the middle (odd K) neutral.
    For K >= 5 (and `expected_value`: a [-3, 3] dataset whose classes are unit steps) the expected class
    value also gives MAE and Pearson correlation against the labels.
    """
    num_classes = probs.shape[1]
    middle = (num_classes - 1) / 2
    class_values = np.arange(num_classes) - middle  # (K,)
    p_negative = probs[:, class_values < 0].sum(axis=1)
    p_positive = probs[:, class_values > 0].sum(axis=1)
    out: dict[str, float] = {}
    truth_negative = regression < 0
    out["acc2_has0"] = 100.0 * float(np.mean((p_negative > 0.5) == truth_negative))
    nonzero = regression != 0
    if nonzero.any():
        pred_positive = p_positive[nonzero] > p_negative[nonzero]
        out["acc2_non0"] = 100.0 * float(np.mean(pred_positive == (regression[nonzero] > 0)))
    if num_classes >= 5 and expected_value:
        expected = probs @ class_values  # (N,)
        out["mae"] = float(np.mean(np.abs(expected - regression)))
        if np.std(expected) > 0 and np.std(regression) > 0:
            out["corr"] = float(np.corrcoef(expected, regression)[0, 1])
    return out


def classification_metrics(logits: Tensor, labels: Tensor, modality_logits: Mapping[str, Tensor],
                           regression: np.ndarray | None = None, expected_value: bool = True) -> dict[str, float]:
    """acc (%), loss (mean CE x 100), f1 (macro, %), acc_<m> and loss_<m>, MSA extras when labels allow.

    logits: (N, K); labels: (N,) int64; modality_logits: modality -> (N, K).
    """
    labels = labels.cpu()
    pred = logits.argmax(dim=1)
    metrics = {
        "acc": 100.0 * float((pred == labels).float().mean()),
        "loss": 100.0 * float(F.cross_entropy(logits, labels)),
        "f1": macro_f1(pred.numpy(), labels.numpy()),
    }
    for modality, mod_logits in modality_logits.items():
        metrics[f"acc_{modality}"] = 100.0 * float((mod_logits.argmax(dim=1) == labels).float().mean())
        metrics[f"loss_{modality}"] = 100.0 * float(F.cross_entropy(mod_logits, labels))
    if regression is not None:
        probs = torch.softmax(logits.double(), dim=1).numpy()
        metrics.update(sentiment_metrics(probs, np.asarray(regression, dtype=np.float64), expected_value))
    return metrics

