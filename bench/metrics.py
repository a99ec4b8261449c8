"""Classification metrics from logits, plus MSA-style metrics derived from class probabilities."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in labels or predictions (as sklearn does), in %."""
    classes = np.union1d(pred, labels)
    scores = []
    for k in classes:
        tp = np.sum((pred == k) & (labels == k))
        fp = np.sum((pred == k) & (labels != k))
        fn = np.sum((pred != k) & (labels == k))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return 100.0 * float(np.mean(scores)) if scores else float("nan")


def sentiment_metrics(probs: np.ndarray, regression: np.ndarray) -> dict[str, float]:
    """Binary accuracies (MMSA 'Has0' / 'Non0') from probabilities of classes ordered negative -> positive.

    probs: (N, K). Classes below the middle are negative, above it positive, the middle (odd K) neutral.
    For K >= 5 the expected class value also gives MAE and Pearson correlation against the labels.
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
    if num_classes >= 5:
        expected = probs @ class_values  # (N,)
        out["mae"] = float(np.mean(np.abs(expected - regression)))
        if np.std(expected) > 0 and np.std(regression) > 0:
            out["corr"] = float(np.corrcoef(expected, regression)[0, 1])
    return out


def classification_metrics(logits: Tensor, labels: Tensor, modality_logits: Mapping[str, Tensor],
                           regression: np.ndarray | None = None) -> dict[str, float]:
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
        metrics.update(sentiment_metrics(probs, np.asarray(regression, dtype=np.float64)))
    return metrics

